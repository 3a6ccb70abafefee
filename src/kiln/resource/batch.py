"""``POST /v<N>/batch``: many requests, one transaction, one flush.

::

    POST /v1/batch
    {"defaults": {"method": "POST", "path": "/mushrooms"},
     "requests": [{"body": {"data": {"name": "a"}}}, {"body": {"data": {"name": "b"}}}]}

    200 {"responses": [{"status": 201, "path": "/v1/mushrooms",
                        "headers": {...}, "body": {...}}, ...]}

Every sub-request gets the answer it would get sent alone (same checks,
same errors, same headers); it inherits the batch's headers
(``Authorization`` included), overridden by its own. The whole batch is
one unit of work (:mod:`kiln.resource.unit_of_work`): the sub-requests are
checked and planned one after the other -- each reads what it needs and
stages its writes -- and the writes of all of them are made in one flush
with the commit, after the last one. A 4xx sub-response is reported and the
batch still commits (what that sub-request staged is dropped: it writes
nothing); a 5xx sub-response fails the whole batch, which is rolled back and
answered with that error -- nothing of it applies. The events of the
sub-requests are merged and sent after the commit.

Sub-requests on resources are handled directly, like requests on the
resource fast path (:mod:`kiln.resource.dispatch`); the others (accounts,
utility views, Clay routes, redirects) go through Flask's full dispatch.
"""

from __future__ import annotations

import copy
import io
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from flask import Flask, Response, current_app, g, request
from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header

from kiln._headers import common_headers
from kiln._json import MAX_JSON_DEPTH, check_media_type, json_too_deep
from kiln._state import KilnState, state_of
from kiln.auth.web import principals_of
from kiln.config import Setting, register_setting
from kiln.cors import cors_headers
from kiln.eos import soft_eol_header
from kiln.errors import HTTPError, invalid_parameter
from kiln.logging import log_summary, summary_logged
from kiln.resource.dispatch import (
    ResourceDispatcher,
    Route,
    check_accept,
    error_reply,
    run_unit,
)
from kiln.resource.endpoints import Reply, Request
from kiln.resource.unit_of_work import UnitOfWork, using
from kiln.views import url_root

if TYPE_CHECKING:
    from kiln.auth.web import Memo

__all__ = ["install_batch", "parse_batch", "serve_batch"]

logger = logging.getLogger("kiln.batch")

register_setting(
    Setting(
        "batch.max_requests",
        (int, None),
        25,
        "Most sub-requests in one batch (null or 0: no limit).",
        True,
    )
)

METHODS = ("GET", "HEAD", "DELETE", "POST", "PUT", "PATCH")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
REQUEST_KEYS = frozenset({"method", "path", "headers", "body"})
_MAX_REDIRECTS = 3
_JSON = "application/json"


class _BatchFailed(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def install_batch(app: Flask, state: KilnState) -> None:
    """Serve ``POST /v<N>/batch`` on ``app`` and show its limit in the hello view."""
    app.add_url_rule(f"{state.api_prefix}/batch", "kiln.batch", batch, methods=["POST"])
    state.public_settings["batch_max_requests"] = "batch.max_requests"


def _invalid(name: str, description: str) -> HTTPError:
    return invalid_parameter("body", name, description)


def _deep_merge(defaults: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """``item`` over ``defaults``; what comes from ``defaults`` is copied (never shared)."""
    merged: dict[str, Any] = {
        key: copy.deepcopy(value) if isinstance(value, dict | list) else value
        for key, value in defaults.items()
    }
    for key, value in item.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_batch(body: Any, prefix: str, max_requests: int | None) -> list[dict[str, Any]]:
    """Validate a batch body; return each sub-request with defaults applied."""
    # A body that is not too deep as a whole has no sub-request body too deep.
    shallow = not json_too_deep(body, MAX_JSON_DEPTH)
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object with a 'requests' list.")
    for key in body:
        if key not in ("defaults", "requests"):
            raise _invalid(key, f"{key} is not allowed.")
    defaults = body.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _invalid("defaults", "must be an object.")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("requests", "must be a non-empty list.")
    if max_requests and len(requests) > max_requests:
        raise _invalid("requests", f"Number of requests is limited to {max_requests}.")
    parsed = []
    for index, item in enumerate(requests):
        name = f"requests.{index}"
        if not isinstance(item, dict):
            raise _invalid(name, "must be an object.")
        sub = _deep_merge(defaults, item) if defaults else dict(item)
        unknown = set(sub) - REQUEST_KEYS
        if unknown:
            raise _invalid(f"{name}.{sorted(unknown)[0]}", f"{sorted(unknown)[0]} is not allowed.")
        method = sub.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise _invalid(f"{name}.method", f"must be one of {', '.join(METHODS)}.")
        path = sub.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise _invalid(f"{name}.path", "must be a path starting with '/'.")
        if _CONTROL.search(path):
            raise _invalid(f"{name}.path", "must not contain control characters.")
        if not (path == prefix or path.startswith((prefix + "/", prefix + "?"))):
            path = prefix + path
        if "/batch" in urlsplit(path).path:
            raise _invalid(f"{name}.path", "Recursive call on /batch endpoint is forbidden.")
        headers = sub.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise _invalid(f"{name}.headers", "must be an object of strings.")
        if any(ch in value for value in headers.values() for ch in "\r\n\0"):
            raise _invalid(f"{name}.headers", "must not contain CR, LF or NUL.")
        if "body" in sub and not isinstance(sub["body"], dict | list):
            raise _invalid(f"{name}.body", "must be a JSON object (or a JSON Patch list).")
        if "body" in sub and not shallow and json_too_deep(sub["body"]):
            raise _invalid(f"{name}.body", f"JSON nesting is limited to {MAX_JSON_DEPTH} levels.")
        parsed.append({**sub, "method": method.upper(), "path": path, "headers": headers})
    return parsed


# --------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------


def batch() -> Response:
    """Run the sub-requests in one unit of work; see the module docstring (Flask path)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    memo: Memo = g.setdefault("kiln_auth_memo", {})
    raw = request.get_data(cache=True)
    reply = _run_batch(app, raw, request.mimetype, request.headers, request.environ, memo)
    response = current_app.response_class(orjson.dumps(reply.body), reply.status, mimetype=_JSON)
    response.headers.update(reply.headers)
    return response


def serve_batch(
    dispatcher: ResourceDispatcher, req: Request, environ: dict[str, Any], memo: Memo
) -> Reply:
    """The batch of ``req`` on the resource fast path."""
    return _run_batch(dispatcher.app, req.body, req.media_type, req.headers, environ, memo)


def _run_batch(
    app: Flask,
    raw: bytes,
    media_type: str | None,
    headers: Any,
    environ: dict[str, Any],
    memo: Memo,
) -> Reply:
    state = state_of(app)
    config = state.config
    check_media_type(media_type, (_JSON,))
    try:
        body = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise _invalid("body", f"Invalid JSON request body: {exc}") from None
    subrequests = parse_batch(body, state.api_prefix, config.setting("batch.max_requests"))
    inherited = {
        key: value
        for key, value in headers.items()
        if key.lower() not in ("content-length", "content-type", "host")
    }
    runner = _Batch(app, state, environ, memo, inherited, nul_free=b"\\u0000" not in raw)
    storage = state.storage
    try:
        if storage is None:
            return Reply(200, {"responses": [runner.run(sub, None) for sub in subrequests]})
        answers = run_unit(state, storage, lambda unit: runner.run_all(subrequests, unit))
    except _BatchFailed as failed:
        return Reply(failed.status, failed.body, failed.headers)
    return Reply(200, {"responses": [answer() for answer in answers]})


class _Batch:
    """The sub-requests of one batch, and how each is served."""

    def __init__(
        self,
        app: Flask,
        state: KilnState,
        environ: dict[str, Any],
        memo: Memo,
        inherited: dict[str, str],
        *,
        nul_free: bool = False,
    ) -> None:
        self.app = app
        self.state = state
        self.environ = environ
        self.memo = memo
        self.inherited = inherited
        #: The batch's body holds no U+0000: its sub-requests' bodies need no check.
        self.nul_free = nul_free
        self._url_root: str | None = None

    @property
    def url_root(self) -> str:
        if self._url_root is None:
            self._url_root = url_root(
                self.environ, self.state.config, self.app.config.get("TRUSTED_HOSTS")
            )
        return self._url_root

    def run_all(self, subrequests: list[dict[str, Any]], unit: UnitOfWork) -> list[Any]:
        """Serve every sub-request in ``unit``; each answer is finished after the commit."""
        with using(unit):
            return [self._answer(sub, unit) for sub in subrequests]

    def run(self, sub: dict[str, Any], unit: UnitOfWork | None) -> dict[str, Any]:
        answer: dict[str, Any] = self._answer(sub, unit)()
        return answer

    def _answer(self, sub: dict[str, Any], unit: UnitOfWork | None) -> Any:
        headers = {**self.inherited, **sub["headers"]}
        path = sub["path"]
        method = sub["method"]
        for _ in range(_MAX_REDIRECTS + 1):
            fast = self._fast_route(method, path) if unit is not None else None
            if fast is not None:
                assert unit is not None
                return self._serve_fast(fast, method, path, headers, sub.get("body"), unit)
            response, sent_headers = self._dispatch(method, path, headers, sub.get("body"))
            location = response.headers.get("Location")
            if response.status_code not in (307, 308) or not location:
                break
            path = location
        if response.status_code >= 500:
            raise _BatchFailed(response.status_code, _body(response, "GET"), dict(sent_headers))
        answer = {
            "status": response.status_code,
            "path": unquote(urlsplit(path).path),
            "headers": dict(sent_headers),
            "body": _body(response, method),
        }
        return lambda: answer

    # -- sub-requests on resources ------------------------------------------

    def _fast_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        router = self.state.router
        assert router is not None  # create_app mounts the resources before any request
        found = router.match(unquote(urlsplit(path).path))
        if (
            found is None
            or found[0].kind == "batch"
            or method not in found[0].methods
            or not router.serves(self.app, found[0])
        ):
            return None
        return found

    def _serve_fast(
        self,
        found: tuple[Route, dict[str, str]],
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        unit: UnitOfWork,
    ) -> Any:
        route, variables = found
        endpoint = route.endpoint
        assert endpoint is not None
        state = self.state
        target, _, query = path.partition("?")
        lookup = _Headers(headers)
        environ = self._sub_environ(method, target, query, headers)
        identity = None
        mark = unit.mark()
        try:
            authenticator = state.authenticator
            if authenticator is not None:
                identity = authenticator.identify(environ, lookup, self.memo)
            check_accept(lookup.get("Accept"))
            has_body = body is not None and method in ("POST", "PUT", "PATCH")
            content_type = lookup.get("Content-Type") or _JSON if has_body else None
            req = Request(
                method=method,
                path=unquote(target),
                variables=variables,
                args=parse_qsl(query, keep_blank_values=True) if query else [],
                headers=lookup,
                read_body=lambda: b"",
                media_type=parse_options_header(content_type)[0] if content_type else None,
                identity=identity,
                principals=principals_of(identity, state.permission, self.memo),
                url_root=self.url_root,
                parsed_body=body if has_body else None,
                parsed_body_checked=self.nul_free,
            )
            endpoint.check(req, route.kind)
            reply = endpoint.handle(req, route.kind, unit)
        except HTTPError as exc:
            unit.discard(mark)
            if exc.status >= 500:
                raise _BatchFailed(exc.status, exc.body, dict(exc.headers)) from None
            reply = error_reply(exc, environ)
        answered_path = unquote(target)

        def answer() -> dict[str, Any]:
            reply.finish()
            self._finish_headers(reply, identity, environ, method, answered_path, lookup)
            metrics = state.metrics
            if metrics is not None:
                metrics.request(environ, method, route.rule, reply.status)
            content = orjson.dumps(reply.body) if reply.status != 304 else b""
            sent = dict(reply.headers)
            if reply.status != 304:
                sent = {"Content-Type": _JSON, "Content-Length": str(len(content)), **sent}
            return {
                "status": reply.status,
                "path": answered_path,
                "headers": sent,
                "body": "" if method == "HEAD" or reply.status == 304 else reply.body,
            }

        return answer

    def _finish_headers(
        self,
        reply: Reply,
        identity: Any,
        environ: dict[str, Any],
        method: str,
        path: str,
        lookup: Mapping[str, str],
    ) -> None:
        state = self.state
        config = state.config
        out = reply.headers
        if state.authenticator is not None:
            state.authenticator.response_headers(reply.status, identity, out)
        log_summary(config, environ, method, path, reply.status)
        cors_headers(config, lookup, method, out)
        soft_eol_header(config, out)
        common_headers(config, out)

    def _sub_environ(
        self, method: str, target: str, query: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        """What the summary log line of a sub-request reads (its headers only
        when that line is written)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "QUERY_STRING": query,
            "kiln.subrequest": True,
            "kiln.start": self.environ.get("kiln.start"),
            "kiln.start_time": self.environ.get("kiln.start_time"),
            "kiln.request_id": self.environ.get("kiln.request_id"),
        }
        if summary_logged(subrequest=True):
            for name, value in headers.items():
                environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
        return environ

    # -- other sub-requests, through Flask ----------------------------------

    def _dispatch(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[Response, Headers]:
        """The sub-request's response, and the headers it would have been sent with alone.

        The sub-request's WSGI environ is the batch's (server, scheme, client
        address) with its own request line, headers and body.
        """
        app = self.app
        has_body = body is not None and method in ("POST", "PUT", "PATCH")
        data = orjson.dumps(body) if has_body else b""
        target, _, query = path.partition("?")
        environ = {key: value for key, value in self.environ.items() if _inheritable(key)}
        environ.update(
            {
                "REQUEST_METHOD": method,
                # WSGI carries the decoded path as latin-1 text of its UTF-8 bytes.
                "PATH_INFO": unquote(target).encode("utf-8").decode("latin-1"),
                "QUERY_STRING": query,
                "CONTENT_LENGTH": str(len(data)),
                "wsgi.input": io.BytesIO(data),
                "kiln.subrequest": True,
                "kiln.request_id": self.environ.get("kiln.request_id"),
            }
        )
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                continue
            environ[f"HTTP_{key}"] = value
        if has_body:
            environ["CONTENT_TYPE"] = (
                headers.get("Content-Type") or headers.get("content-type") or _JSON
            )
        with app.request_context(environ):
            response = app.full_dispatch_request()
        transient = environ.get("kiln.transient_failure")
        if transient is not None:
            raise transient  # the database aborted it: the whole batch runs again
        return response, response.get_wsgi_headers(environ)


class _Headers(Mapping[str, str]):
    """A sub-request's headers, looked up case-insensitively (as HTTP's are)."""

    __slots__ = ("_by_name",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._by_name = {name.lower(): (name, value) for name, value in headers.items()}

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()][1]

    def get(self, name: str, default: Any = None) -> Any:
        found = self._by_name.get(name.lower())
        return default if found is None else found[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def _inheritable(key: str) -> bool:
    """Whether a sub-request inherits the WSGI ``key`` of its batch: not its own
    request line, body and headers, nor what Flask, werkzeug and kiln cached per request."""
    return not (
        key.startswith(("HTTP_", "kiln.", "werkzeug."))
        or key in ("CONTENT_TYPE", "CONTENT_LENGTH", "wsgi.input", "PATH_INFO", "QUERY_STRING")
    )


def _body(response: Response, method: str) -> Any:
    if method == "HEAD":
        return ""
    data = response.get_data()
    if response.mimetype == _JSON and data:
        return orjson.loads(data)
    return data.decode("utf-8", "replace")
