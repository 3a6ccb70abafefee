"""End of service: warn clients before a date, then answer 410 Gone.

``eos.date`` (``YYYY-MM-DD``, UTC) announces when this service stops.
Before that date every response carries an ``Alert`` header::

    Alert: {"code": "soft-eol", "message": "...", "url": "..."}

From that date on, every request (but CORS preflights) answers 410, errno
202, with ``Alert: {"code": "hard-eol", ...}``. ``eos.message`` and
``eos.url`` (default ``project.docs``) fill the alert; the hello view
shows them under ``eos``.
"""

from __future__ import annotations

import datetime
from collections.abc import MutableMapping
from typing import Any

import orjson
from flask import Flask, Response, request

from kiln._state import kiln_hook
from kiln.config import Configuration, Setting, register_setting
from kiln.errors import ERRORS, HTTPError

__all__ = ["eos_info", "hard_eol_error", "install_eos", "soft_eol_header"]


def _check_date(value: Any) -> str | None:
    try:
        datetime.date.fromisoformat(str(value))
    except ValueError:
        return f"must be a date like '2027-01-31', got {value!r}"
    return None


for _setting in (
    Setting(
        "eos.date",
        (str, None),
        None,
        "End-of-service date (UTC, YYYY-MM-DD): `Alert` before it, 410 from it.",
        True,
        check_value=_check_date,
    ),
    Setting("eos.message", (str, None), None, "Message of the end-of-service alert.", True),
    Setting(
        "eos.url",
        (str, None),
        None,
        "Link of the end-of-service alert (default project.docs).",
        True,
    ),
):
    register_setting(_setting)


def eos_info(config: Configuration) -> dict[str, Any] | None:
    """The end-of-service announcement, or None when ``eos.date`` is unset."""
    date = config.setting("eos.date")
    if not date:
        return None
    return {
        "date": date,
        "message": config.setting("eos.message"),
        "url": config.setting("eos.url") or config.setting("project.docs") or None,
    }


def _alert(code: str, info: dict[str, Any]) -> str:
    return orjson.dumps({"code": code, "message": info["message"], "url": info["url"]}).decode()


def hard_eol_error(config: Configuration, method: str) -> HTTPError | None:
    """The 410 every request gets from ``eos.date`` on (but CORS preflights)."""
    info = eos_info(config)
    if info is None or method == "OPTIONS":
        return None
    today = datetime.datetime.now(datetime.UTC).date()
    if today < datetime.date.fromisoformat(info["date"]):
        return None
    return HTTPError(
        410,
        ERRORS.SERVICE_DEPRECATED,
        info["message"]
        or "The service you are trying to connect no longer exists at this location.",
        headers={"Alert": _alert("hard-eol", info)},
    )


def soft_eol_header(config: Configuration, headers: MutableMapping[str, str]) -> None:
    """Announce the end of service (``Alert``) until ``eos.date``."""
    info = eos_info(config)
    if info is not None and "Alert" not in headers:
        headers["Alert"] = _alert("soft-eol", info)


def install_eos(app: Flask, config: Configuration) -> None:
    """Send soft/hard end-of-service alerts on ``app`` (``config``: the app's)."""

    @app.before_request
    @kiln_hook
    def _hard_eol() -> None:
        error = hard_eol_error(config, request.method)
        if error is not None:
            raise error

    @app.after_request
    @kiln_hook
    def _soft_eol(response: Response) -> Response:
        soft_eol_header(config, response.headers)  # type: ignore[arg-type]
        return response
