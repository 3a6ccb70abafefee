"""Databases and connections for the tests of the storage, permission and
cache backends (a pytest plugin, loaded by ``tests/conftest.py``).

Each engine gives a working one and a broken one (its engine fails), which
the contract suites' ``backend`` and ``broken_backend`` fixtures wrap:

- SQLite: ``sqlite_database`` (a new file), ``broken_sqlite_database`` (a
  file that is not a database);
- PostgreSQL: ``schema_url`` (a fresh schema per test module),
  ``postgresql_database`` (on it), ``broken_postgresql_database`` (nothing
  listens);
- Redis: ``redis_connection`` (the shared connection to the test database,
  emptied), ``broken_redis_url`` (nothing listens).

Each is closed after the test, as is whatever a test passes to ``closing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from kiln import _redis
from kiln._postgresql import PostgreSQLDatabase
from kiln._sqlite import SQLiteDatabase
from tests.pgschema import CLOSED_PORT_URL, fresh_schema

T = TypeVar("T")


@pytest.fixture
def closing() -> Iterator[Callable[[T], T]]:
    opened: list[Any] = []

    def close_later(thing: T) -> T:
        opened.append(thing)
        return thing

    yield close_later
    for thing in reversed(opened):
        thing.close()


@pytest.fixture
def sqlite_database(tmp_path: Any) -> Iterator[SQLiteDatabase]:
    database = SQLiteDatabase(str(tmp_path / "kiln.sqlite"))
    yield database
    database.close()


@pytest.fixture
def broken_sqlite_database(tmp_path: Any) -> Iterator[SQLiteDatabase]:
    path = tmp_path / "not-a-database.sqlite"
    path.write_bytes(b"this is not a SQLite file" * 100)
    database = SQLiteDatabase(str(path))
    yield database
    database.close()


@pytest.fixture(scope="module")
def schema_url(postgresql_url: str) -> Iterator[str]:
    with fresh_schema(postgresql_url) as url:
        yield url


@pytest.fixture
def postgresql_database(schema_url: str) -> Iterator[PostgreSQLDatabase]:
    database = PostgreSQLDatabase(schema_url)
    yield database
    database.close()


@pytest.fixture
def broken_postgresql_database() -> Iterator[PostgreSQLDatabase]:
    database = PostgreSQLDatabase(CLOSED_PORT_URL, pool_timeout=0.2, connect_timeout=1)
    yield database
    database.close()


@pytest.fixture
def redis_connection(redis_url: str) -> Iterator[_redis.RedisConnection]:
    connection = _redis.acquire(redis_url)
    connection.client.flushdb()
    yield connection
    connection.release()


@pytest.fixture
def broken_redis_url() -> str:
    return "redis://127.0.0.1:1/15"
