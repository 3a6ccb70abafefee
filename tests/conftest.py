from __future__ import annotations

import os

import pytest
from hypothesis import settings

import kiln  # noqa: F401
from kiln.application import reset_global_app
from kiln.config import Configuration

pytest_plugins = ["tests.services", "tests.pgcluster", "tests.backends"]

# Property tests explore new examples on every local run; under CI they run
# the same examples every time, so that a submission's result does not
# depend on a draw (a failure found locally is fixed, then kept as a test).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # as tests.services
    settings.load_profile("ci")


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
