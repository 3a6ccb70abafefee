"""``clay.config``: kiln's :mod:`kiln.config` under Clay's name.

``get``, ``feature_flag``, ``get_logger``, ``debug`` (deprecated), ``load``
and the ``CONFIG`` object (whose ``config`` dict the manual's testing
recipes patch) are the very objects of :mod:`kiln.config`.
"""

from __future__ import annotations

from kiln.config import (
    CONFIG,
    SETTINGS,
    Configuration,
    Setting,
    current,
    debug,
    feature_flag,
    get,
    get_logger,
    install_reload_signal,
    load,
)

__all__ = [
    "CONFIG",
    "SETTINGS",
    "Configuration",
    "Setting",
    "current",
    "debug",
    "feature_flag",
    "get",
    "get_logger",
    "install_reload_signal",
    "load",
]
