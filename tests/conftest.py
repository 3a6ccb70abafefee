from __future__ import annotations

import pytest

import kiln  # noqa: F401
from kiln.application import reset_global_app
from kiln.config import Configuration

pytest_plugins = ["tests.services", "tests.pgcluster", "tests.backends"]


@pytest.fixture
def make_app():
    """Build an app from a config mapping: ``make_app({"project": {...}})``."""
    from kiln import create_app

    def build(tree=None, **kwargs):
        return create_app(Configuration.from_mapping(tree or {}), **kwargs)

    return build


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.fixture(autouse=True)
def _isolated_global_app():
    yield
    reset_global_app()
