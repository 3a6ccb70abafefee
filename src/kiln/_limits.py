"""kiln's limits on a request's URL and header fields (``request.max_url_bytes``,
``request.max_headers``, ``request.max_header_bytes``).

They are checked before anything else reads the request, on the resource fast
path (:class:`~kiln.resource.dispatch.ResourceDispatcher`) and in Flask's
first hook alike, and answer with the JSON envelope: 414 for the URL, 431 for
the header fields. The server in front reads the request first and has its
own limits: ``kiln.gunicorn`` sets gunicorn's above these, so kiln answers
for the range of sizes a client realistically sends (``docs/deployment.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, request

from kiln._state import kiln_hook
from kiln.config import Configuration
from kiln.errors import ERRORS, HTTPError

__all__ = ["install_request_limits", "request_limit_error"]

#: WSGI keys of header fields that do not start with ``HTTP_``.
_UNPREFIXED = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


def _target_length(environ: Mapping[str, Any]) -> int:
    """Bytes of the request target (path and query) as the client sent it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return len(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    return len(path) + (len(query) + 1 if query else 0)


def _field_name(key: str) -> str:
    """The header field name of WSGI key ``key`` (``HTTP_X_REQUEST_ID``: ``X-Request-Id``)."""
    return _UNPREFIXED.get(key) or key[5:].replace("_", "-").title()


def request_limit_error(config: Configuration, environ: Mapping[str, Any]) -> HTTPError | None:
    """The 414 or 431 a request over kiln's limits gets, else None."""
    limit = config.setting("request.max_url_bytes")
    length = _target_length(environ)
    if length > limit:
        return HTTPError(
            414,
            ERRORS.INVALID_PARAMETERS,
            f"The URL is {length} bytes long; this service accepts at most {limit}.",
        )
    most = config.setting("request.max_headers")
    longest = config.setting("request.max_header_bytes")
    # One pass, no allocation for a request within the limits (every request).
    count = 0
    oversized: tuple[str, int] | None = None
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name_length = len(key) - 5
        elif key in _UNPREFIXED:
            name_length = len(_UNPREFIXED[key])
        else:
            continue
        count += 1
        size = name_length + 2 + len(value)
        if size > longest and oversized is None:
            oversized = (_field_name(key), size)
    if count > most:
        return HTTPError(
            431,
            ERRORS.INVALID_PARAMETERS,
            f"The request has {count} header fields; this service accepts at most {most}.",
        )
    if oversized is not None:
        name, size = oversized
        return HTTPError(
            431,
            ERRORS.INVALID_PARAMETERS,
            f"Header field {name} is {size} bytes long; this service accepts at most {longest}.",
        )
    return None


def install_request_limits(app: Flask, config: Configuration) -> None:
    """Check kiln's limits first in every request Flask serves (register it
    before any other ``before_request`` hook)."""

    @app.before_request
    @kiln_hook
    def _request_limits() -> None:
        error = request_limit_error(config, request.environ)
        if error is not None:
            raise error
