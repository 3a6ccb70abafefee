"""Broken servers for tests/test_loadtests.py: WSGI middleware that break one invariant each.

List one in a kiln config's ``middleware`` to serve the load tests' application
with that fault (the tests do, in-process and under gunicorn).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def call(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.update(status=status, headers=headers)
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def respond(
    start_response: Callable[..., Any], status: str, headers: list[tuple[str, str]], body: bytes
) -> list[bytes]:
    kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, [*kept, ("Content-Length", str(len(body)))])
    return [body]


class DropOneWrite:
    """Acknowledges the first JSON PATCH of a psilo without writing it: it answers 200 with
    the record as the client asked it to be, and a new ETag, but changes nothing."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.dropped = False

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        is_json_patch = (
            environ["REQUEST_METHOD"] == "PATCH"
            and path.startswith("/v1/psilos/")
            and path.count("/") == 3
            and environ.get("CONTENT_TYPE", "").startswith("application/json")
        )
        if self.dropped or not is_json_patch:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        sent = json.loads(environ["wsgi.input"].read(length))
        if "data" not in sent:
            environ["wsgi.input"] = io.BytesIO(json.dumps(sent).encode())
            return self.app(environ, start_response)
        self.dropped = True
        read = {**environ, "REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0"}
        for header in ("HTTP_IF_MATCH", "CONTENT_TYPE"):
            read.pop(header, None)
        status, headers, body = call(self.app, read)
        record = json.loads(body)
        record["data"].update(sent["data"])
        record["data"]["last_modified"] += 1
        etag = f'"{record["data"]["last_modified"]}"'
        headers = [(k, v) for k, v in headers if k.lower() != "etag"] + [("ETag", etag)]
        return respond(start_response, status, headers, json.dumps(record).encode())


class SkipOneChange:
    """Leaves one record out of every ``_since`` answer after the first sync: the first
    record such an answer would have carried."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.skipped: str | None = None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        since = query.get("_since", ["0"])[0]
        if environ["REQUEST_METHOD"] != "GET" or since in ("0", '"0"'):
            return self.app(environ, start_response)
        status, headers, body = call(self.app, environ)
        if not status.startswith("200"):
            return respond(start_response, status, headers, body)
        answer = json.loads(body)
        if self.skipped is None and answer["data"]:
            self.skipped = answer["data"][0]["id"]
        answer["data"] = [record for record in answer["data"] if record["id"] != self.skipped]
        return respond(start_response, status, headers, json.dumps(answer).encode())


class RepeatOnNextPage:
    """Lists the first record of every page reached through a ``_token`` twice."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if "_token=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        status, headers, body = call(self.app, environ)
        answer = json.loads(body)
        answer["data"] = answer["data"][:1] + answer["data"]
        return respond(start_response, status, headers, json.dumps(answer).encode())


class Liar:
    """Lets every write happen, but answers wrongly wherever it can: records changed in
    write answers and reads, no tombstone flag, 412s without the current record, lists
    out of order with a record missing and a stranger added, ``Total-Records: 0``."""

    STRANGER = {"id": "stranger", "name": "zzz", "kind": "none", "size": -5, "last_modified": 0}

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path in ("/v1/", "/v1/batch") or method == "POST":
            return self.app(environ, start_response)
        status, headers, body = call(self.app, environ)
        if method == "HEAD":
            headers = [(k, v) for k, v in headers if k.lower() != "total-records"]
            return respond(start_response, status, [*headers, ("Total-Records", "0")], body)
        if not body:
            return respond(start_response, status, headers, body)
        answer = json.loads(body)
        data = answer.get("data")
        if status.startswith("412"):
            answer.pop("details", None)
        elif method == "DELETE":
            data.pop("deleted", None)
        elif isinstance(data, dict):
            data.update(size=-1, tags=["lie"], notes="lie", done=None)
            answer["permissions"] = {"read": ["nobody"]}
        elif isinstance(data, list) and "_since" not in query:
            answer["data"] = [*list(reversed(data))[1:], self.STRANGER]
        return respond(start_response, status, headers, json.dumps(answer).encode())


class HideFromOneSort:
    """Leaves the first record out of lists sorted by name."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if "_sort=name" not in environ.get("QUERY_STRING", "") or "_token" in environ.get(
            "QUERY_STRING", ""
        ):
            return self.app(environ, start_response)
        status, headers, body = call(self.app, environ)
        answer = json.loads(body)
        answer["data"] = answer["data"][1:]
        return respond(start_response, status, headers, json.dumps(answer).encode())
