"""The headers every response of a kiln app carries (sans-IO).

Both request paths add them: Flask's (an ``after_request`` hook installed by
:func:`kiln.create_app`) and the resource fast path
(:mod:`kiln.resource.dispatch`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.config import Configuration

__all__ = ["common_headers", "vary"]


def common_headers(config: Configuration, headers: MutableMapping[str, str]) -> None:
    """``Backoff`` (when set), ``Cache-Control: no-cache`` unless the response
    chose one, and ``Vary: Authorization, Origin``: caches must revalidate,
    and never serve one caller's response to another."""
    backoff = config.setting("backoff")
    if backoff is not None:
        headers["Backoff"] = str(backoff)
    if "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-cache"
    headers["Vary"] = vary(headers.get("Vary"))


def vary(current: str | None) -> str:
    """``current`` (a ``Vary`` value) with ``Authorization`` and ``Origin`` in it."""
    if not current:
        return "Authorization, Origin"
    present = {part.strip().lower() for part in current.split(",")}
    missing = [name for name in ("Authorization", "Origin") if name.lower() not in present]
    return ", ".join([current, *missing]) if missing else current
