"""Clay compatibility (ARCHITECTURE D13): code written for Clay runs on kiln.

``from clay import app, config`` and the ``clay.*`` modules of Clay's manual
are kiln's, re-exported. ``CLAY_CONFIG`` is honoured when ``KILN_CONFIG`` is
unset. Unlike Clay, importing ``clay`` loads nothing: ``app`` is built from
the config the first time it is used. What differs from Clay is listed in
``docs/coming-from-clay.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clay import config
from kiln.__about__ import __version__

if TYPE_CHECKING:
    from types import ModuleType

    from flask import Flask

    app: Flask
    logger: ModuleType
    stats: ModuleType

__all__ = ["__version__", "app", "config", "logger", "stats"]

#: Submodules Clay's package imported itself; kiln's load them on first use.
_SUBMODULES = ("logger", "stats")


def __getattr__(name: str) -> Any:
    if name == "app":
        from kiln.application import get_app

        return get_app()
    if name in _SUBMODULES:
        return importlib.import_module(f"clay.{name}")
    raise AttributeError(f"module 'clay' has no attribute {name!r}")
