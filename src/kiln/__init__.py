"""kiln: RESTful backend services in minutes.

kiln unites Clay's service chassis (layered config with live reload and
feature flags, logging, mail, HTTP client, database read/write splitting,
``/_docs``) and Cliquet's resource protocol, on Flask.

::

    from kiln import app, config

    @app.route("/hello", methods=["GET"])
    def hello():
        return {"hello": config.get("project.name")}

``app`` is the process-wide Flask app, built on first use from
``KILN_CONFIG``; :func:`create_app` builds independent apps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln import config, exceptions
from kiln.__about__ import __version__
from kiln.application import create_app, get_app

if TYPE_CHECKING:
    from flask import Flask

    app: Flask

__all__ = [
    "__version__",
    "app",
    "config",
    "create_app",
    "exceptions",
    "get_app",
]


def __getattr__(name: str) -> Any:
    # ``from kiln import app``: the process-wide app, built lazily (D12).
    if name == "app":
        return get_app()
    raise AttributeError(f"module 'kiln' has no attribute {name!r}")
