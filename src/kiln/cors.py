"""Cross-origin resource sharing for every response.

``cors.origins`` lists the origins allowed to call the API from a browser
(default ``["*"]``: any). Entries may use shell wildcards
(``https://*.example.org``). For an allowed ``Origin``, responses carry
``Access-Control-Allow-Origin`` (the origin itself) and
``Access-Control-Expose-Headers`` (the protocol's headers, so scripts can
read ``ETag``, ``Next-Page``, ``Total-Records``, ``Backoff``, ...); a
preflight ``OPTIONS`` also gets the allowed methods, the requested headers
and ``Access-Control-Max-Age: cors.max_age_seconds``. Error responses get
the same headers, so a browser can read the error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, MutableMapping

from flask import Flask, Response, request

from kiln._state import kiln_hook
from kiln.config import Configuration, Setting, register_setting

__all__ = ["EXPOSED_HEADERS", "cors_headers", "install_cors", "origin_allowed"]

EXPOSED_HEADERS = (
    "Alert",
    "Backoff",
    "Cache-Control",
    "Content-Length",
    "ETag",
    "Expires",
    "Last-Modified",
    "Next-Page",
    "Pragma",
    "Retry-After",
    "Total-Records",
    "Vary",
    "X-Request-Id",
)
_EXPOSED = ", ".join(EXPOSED_HEADERS)

for _setting in (
    Setting(
        "cors.origins",
        (list,),
        ["*"],
        "Origins allowed to call the API from browsers; shell wildcards allowed.",
        True,
    ),
    Setting(
        "cors.max_age_seconds",
        (int, None),
        3600,
        "How long browsers may cache a preflight answer (null: no header).",
        True,
    ),
):
    register_setting(_setting)


def origin_allowed(origin: str, patterns: list[str]) -> bool:
    """Whether ``origin`` matches one of ``patterns`` (case-sensitive shell wildcards)."""
    return any(fnmatch.fnmatchcase(origin, str(pattern)) for pattern in patterns)


def cors_headers(
    config: Configuration,
    request_headers: Mapping[str, str],
    method: str,
    headers: MutableMapping[str, str],
) -> None:
    """Add the CORS headers a response to a request with ``request_headers`` gets."""
    origin = request_headers.get("Origin")
    if not origin or not origin_allowed(origin, config.setting("cors.origins")):
        return
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Expose-Headers"] = _EXPOSED
    if method == "OPTIONS" and "Access-Control-Request-Method" in request_headers:
        allowed = headers.get("Allow")
        if allowed:
            headers["Access-Control-Allow-Methods"] = allowed
        requested = request_headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        max_age = config.setting("cors.max_age_seconds")
        if max_age is not None:
            headers["Access-Control-Max-Age"] = str(max_age)


def install_cors(app: Flask, config: Configuration) -> None:
    """Add CORS headers to every response of ``app`` (``config``: the app's)."""

    @app.after_request
    @kiln_hook
    def _cors(response: Response) -> Response:
        cors_headers(config, request.headers, request.method, response.headers)  # type: ignore[arg-type]
        return response
