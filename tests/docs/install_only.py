"""A views module serving the OpenAPI document and page without Clay's /_docs."""

from __future__ import annotations

from flask import Flask

from kiln.docs import install


def init_app(app: Flask) -> None:
    install(app)
