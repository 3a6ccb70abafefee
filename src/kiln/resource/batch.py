"""``POST /v<N>/batch``: many requests, one transaction.

::

    POST /v1/batch
    {"defaults": {"method": "POST", "path": "/mushrooms"},
     "requests": [{"body": {"data": {"name": "a"}}}, {"body": {"data": {"name": "b"}}}]}

    200 {"responses": [{"status": 201, "path": "/v1/mushrooms",
                        "headers": {...}, "body": {...}}, ...]}

Every sub-request goes through exactly the pipeline of the same request
sent alone (routing, hooks, authentication when it lands, views, error
handlers); it inherits the batch's headers (``Authorization`` included),
overridden by its own. The whole batch is one unit of work: a 4xx
sub-response is reported and the batch still commits (a failed
sub-request wrote nothing); a 5xx sub-response fails the whole batch, which
is rolled back and answered with that error — nothing of it applies.
Events of the sub-requests are merged and sent after the commit.
"""

from __future__ import annotations

import copy
import io
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from flask import Flask, Response, current_app, request
from werkzeug.datastructures import Headers

from kiln._state import KilnState, state_of
from kiln.config import Setting, register_setting
from kiln.errors import ERRORS, HTTPError, invalid_parameter, json_response
from kiln.resource.views import MAX_JSON_DEPTH, json_too_deep, retrying

__all__ = ["install_batch"]

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
REQUEST_KEYS = frozenset({"method", "path", "headers", "body"})
_MAX_REDIRECTS = 3


class _BatchFailed(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def install_batch(app: Flask, state: KilnState) -> None:
    """Serve ``POST /v<N>/batch`` on ``app`` and show its limit in the hello view."""
    app.add_url_rule(f"{state.api_prefix}/batch", "kiln.batch", batch, methods=["POST"])
    state.public_settings.append("batch.max_requests")


def _invalid(name: str, description: str) -> HTTPError:
    return invalid_parameter("body", name, description)


def _deep_merge(defaults: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in item.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_batch(body: Any, prefix: str, max_requests: int | None) -> list[dict[str, Any]]:
    """Validate a batch body; return each sub-request with defaults applied."""
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
        sub = _deep_merge(defaults, item)
        unknown = set(sub) - REQUEST_KEYS
        if unknown:
            raise _invalid(f"{name}.{sorted(unknown)[0]}", f"{sorted(unknown)[0]} is not allowed.")
        method = sub.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise _invalid(f"{name}.method", f"must be one of {', '.join(METHODS)}.")
        path = sub.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise _invalid(f"{name}.path", "must be a path starting with '/'.")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
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
        if "body" in sub and json_too_deep(sub["body"]):
            raise _invalid(f"{name}.body", f"JSON nesting is limited to {MAX_JSON_DEPTH} levels.")
        parsed.append({**sub, "method": method.upper(), "path": path, "headers": headers})
    return parsed


def batch() -> Response:
    """Run the sub-requests in one unit of work; see the module docstring."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = state_of(app)
    config = state.config
    if request.mimetype != "application/json":
        raise HTTPError(
            415,
            ERRORS.INVALID_PARAMETERS,
            "Content-Type header should be one of ['application/json'].",
        )
    try:
        body = orjson.loads(request.get_data(cache=True) or b"null")
    except orjson.JSONDecodeError as exc:
        raise _invalid("body", f"Invalid JSON request body: {exc}") from None
    subrequests = parse_batch(body, state.api_prefix, config.setting("batch.max_requests"))
    storage = state.storage
    inherited = {
        key: value
        for key, value in request.headers.items()
        if key.lower() not in ("content-length", "content-type", "host")
    }

    def run_all(_models: Any) -> Response:
        responses = [_run(app, sub, inherited) for sub in subrequests]
        return json_response({"responses": responses})

    try:
        if storage is None:
            return run_all([])
        return retrying(storage, run_all)
    except _BatchFailed as failed:
        return failed.response


def _run(app: Flask, sub: dict[str, Any], inherited: dict[str, str]) -> dict[str, Any]:
    headers = {**inherited, **sub["headers"]}
    path = sub["path"]
    method = sub["method"]
    for _ in range(_MAX_REDIRECTS + 1):
        response, sent_headers = _dispatch(app, method, path, headers, sub.get("body"))
        location = response.headers.get("Location")
        if response.status_code not in (307, 308) or not location:
            break
        path = location
    if response.status_code >= 500:
        raise _BatchFailed(response)
    return {
        "status": response.status_code,
        "path": unquote(urlsplit(path).path),
        "headers": dict(sent_headers),
        "body": _body(response, method),
    }


#: WSGI keys a sub-request does not inherit from its batch: its own request
#: line, body and headers, and what Flask, werkzeug and kiln cached per request.
def _inheritable(key: str) -> bool:
    return not (
        key.startswith(("HTTP_", "kiln.", "werkzeug."))
        or key in ("CONTENT_TYPE", "CONTENT_LENGTH", "wsgi.input", "PATH_INFO", "QUERY_STRING")
    )


def _dispatch(
    app: Flask, method: str, path: str, headers: dict[str, str], body: Any
) -> tuple[Response, Headers]:
    """The sub-request's response, and the headers it would have been sent with alone.

    The sub-request's WSGI environ is the batch's (server, scheme, client
    address) with its own request line, headers and body.
    """
    has_body = body is not None and method in ("POST", "PUT", "PATCH")
    data = orjson.dumps(body) if has_body else b""
    target, _, query = path.partition("?")
    environ = {key: value for key, value in request.environ.items() if _inheritable(key)}
    environ.update(
        {
            "REQUEST_METHOD": method,
            # WSGI carries the decoded path as latin-1 text of its UTF-8 bytes.
            "PATH_INFO": unquote(target).encode("utf-8").decode("latin-1"),
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "kiln.subrequest": True,
        }
    )
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue
        environ[f"HTTP_{key}"] = value
    if has_body:
        environ["CONTENT_TYPE"] = (
            headers.get("Content-Type") or headers.get("content-type") or "application/json"
        )
    with app.request_context(environ):
        response = app.full_dispatch_request()
    transient = environ.get("kiln.transient_failure")
    if transient is not None:
        raise transient  # the database aborted it: the whole batch runs again
    return response, response.get_wsgi_headers(environ)


def _body(response: Response, method: str) -> Any:
    if method == "HEAD":
        return ""
    data = response.get_data()
    if response.mimetype == "application/json" and data:
        return orjson.loads(data)
    return data.decode("utf-8", "replace")
