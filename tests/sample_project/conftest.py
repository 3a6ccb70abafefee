from __future__ import annotations

import pytest

from kiln.database import Database
from kiln.testing import FIXTURE_LOADERS, register_fixture_loader


@pytest.fixture(scope="session", autouse=True)
def schema(kiln_base_config):
    database = Database(kiln_base_config)
    with database.write as db:
        db.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
    database.close()


@pytest.fixture(scope="session", autouse=True)
def value_fixtures():
    # A fixture kind of the project's own: ``{value: ...}`` is handed to the test as is.
    register_fixture_loader("value", lambda spec, context: spec["value"])
    yield
    FIXTURE_LOADERS.pop("value")
