"""``clay.server``: the app, the WSGI callable and ``clay-devserver``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    app: Flask
    application: Flask

__all__ = ["app", "application", "devserver"]


def __getattr__(name: str) -> Any:
    if name in ("app", "application"):
        from kiln.application import get_app

        return get_app()
    raise AttributeError(f"module 'clay.server' has no attribute {name!r}")


def devserver() -> None:
    """Clay's ``clay-devserver``: ``kiln devserver`` (needs ``debug.enabled``)."""
    from kiln.cli import main

    main.main(args=["devserver", *sys.argv[1:]], prog_name="clay-devserver")
