"""Cross-origin resource sharing for every response.

``cors.origins`` lists the origins allowed to call the API from a browser
(default ``["*"]``: any). In an entry, ``*`` stands for one or more DNS
labels (``https://*.example.org``, ``http://localhost:*``): it never
matches a ``/``, ``?``, ``#``, ``@`` or ``:``, and an ``Origin`` header that
is not an origin (``scheme://host[:port]``, nothing more) matches no entry
but ``*`` alone, so ``https://evil.com/.example.org`` is not allowed by
``https://*.example.org``. For an allowed ``Origin``, responses carry
``Access-Control-Allow-Origin`` (the origin itself) and
``Access-Control-Expose-Headers`` (the protocol's headers, so scripts can
read ``ETag``, ``Next-Page``, ``Total-Records``, ``Backoff``, ...); a
preflight ``OPTIONS`` also gets the allowed methods, the requested headers
and ``Access-Control-Max-Age: cors.max_age_seconds``. Error responses get
the same headers, so a browser can read the error.
"""

from __future__ import annotations

import functools
import re
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
        "Origins allowed to call the API from browsers (`scheme://host[:port]`); "
        "`*` stands for DNS labels (`https://*.example.org`), `*` alone for any origin.",
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


#: A serialized origin: a scheme, a host (DNS labels or a bracketed IPv6
#: address) and an optional port; no user, path, query or fragment.
_ORIGIN = re.compile(
    r"[a-z][a-z0-9+.-]*://(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?",
    re.IGNORECASE,
)
#: What ``*`` stands for in a pattern: one or more DNS labels.
_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"


def origin_allowed(origin: str, patterns: list[str]) -> bool:
    """Whether ``origin`` matches one of ``patterns``: ``*`` alone matches any
    ``Origin``; in any other pattern, ``*`` stands for one or more DNS labels
    of a well-formed origin (case-insensitive)."""
    if "*" in patterns:
        return True
    if not _ORIGIN.fullmatch(origin):
        return False
    return any(_pattern(str(pattern)).fullmatch(origin) for pattern in patterns)


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(_LABELS.join(map(re.escape, pattern.split("*"))), re.IGNORECASE)


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
