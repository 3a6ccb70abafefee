"""Real external services for the test suite: PostgreSQL, Redis, MySQL/MariaDB.

Each service comes from a pytest option that defaults to an environment
variable, then to the standard local port:

=============  ======================  ==============================================
option         environment             default
=============  ======================  ==============================================
--postgresql-url  KILN_TEST_POSTGRESQL_URL  postgresql://postgres@127.0.0.1:5432/kiln_test
--redis-url       KILN_TEST_REDIS_URL       redis://127.0.0.1:6379/15
--mysql-url       KILN_TEST_MYSQL_URL       mysql://root@127.0.0.1:3306/kiln_test
=============  ======================  ==============================================

A test asks for a service through the ``postgresql_url``, ``redis_url`` or
``mysql_url`` fixture and is marked ``postgresql``/``redis``/``mysql``
automatically, so ``-m "not postgresql"`` deselects it. When the service
cannot be reached the test is skipped with the reason -- except under
``CI=true``, where an absent service fails the test: CI never passes by
skipping.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest


@dataclass(frozen=True)
class Service:
    name: str
    option: str
    env: str
    default: str
    probe: Callable[[str], None]


def _probe_postgresql(url: str) -> None:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
        parts = urlsplit(url)
        admin = parts._replace(path="/postgres").geturl()
        with psycopg.connect(admin, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{parts.path.lstrip("/")}"')


def _probe_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def mysql_connect_kwargs(url: str) -> dict[str, object]:
    """pymysql ``connect()`` arguments for a ``mysql://user:pw@host:port/db`` URL."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "database": parts.path.lstrip("/") or None,
        "connect_timeout": 3,
    }


def _probe_mysql(url: str) -> None:
    import pymysql

    kwargs = mysql_connect_kwargs(url)
    database = kwargs.pop("database")
    conn = pymysql.connect(**kwargs)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    finally:
        conn.close()


SERVICES = {
    service.name: service
    for service in (
        Service(
            "postgresql",
            "--postgresql-url",
            "KILN_TEST_POSTGRESQL_URL",
            "postgresql://postgres@127.0.0.1:5432/kiln_test",
            _probe_postgresql,
        ),
        Service(
            "redis", "--redis-url", "KILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15", _probe_redis
        ),
        Service(
            "mysql",
            "--mysql-url",
            "KILN_TEST_MYSQL_URL",
            "mysql://root@127.0.0.1:3306/kiln_test",
            _probe_mysql,
        ),
    )
}


def in_ci() -> bool:
    """Whether absent services must fail rather than skip (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kiln services")
    for service in SERVICES.values():
        group.addoption(
            service.option,
            default=os.environ.get(service.env, service.default),
            help=f"URL of the {service.name} server for tests (env {service.env}; "
            f"default {service.default}).",
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for name in SERVICES:
            if f"{name}_url" in fixtures:
                item.add_marker(getattr(pytest.mark, name))


_reachable: dict[str, str | None] = {}


def require(config: pytest.Config, name: str) -> str:
    """The URL of service ``name``; skip (or fail under CI) when it is down."""
    service = SERVICES[name]
    url: str = config.getoption(service.option)
    if name not in _reachable:
        try:
            service.probe(url)
        except Exception as exc:  # the driver's own error says why
            _reachable[name] = f"{name} is not reachable at {url}: {exc}".strip()
        else:
            _reachable[name] = None
    problem = _reachable[name]
    if problem:
        if in_ci():
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(f"{problem} (start it, or pass {service.option})")
    return url


@pytest.fixture(scope="session")
def postgresql_url(pytestconfig: pytest.Config) -> str:
    return require(pytestconfig, "postgresql")


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> Iterator[str]:
    url = require(pytestconfig, "redis")
    yield url
    # The tests empty the database before they use it; empty it after them too.
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def mysql_url(pytestconfig: pytest.Config) -> str:
    return require(pytestconfig, "mysql")


def empty_storage_url(
    request: pytest.FixtureRequest, backend: str, directory: str, stack: contextlib.ExitStack
) -> str:
    """The ``storage.url`` of an empty store of ``backend`` for one test: a
    SQLite file in ``directory``, a fresh PostgreSQL schema (dropped when
    ``stack`` closes), the emptied Redis database; ``""`` for memory."""
    if backend == "sqlite":
        return os.path.join(directory, "k.sqlite")
    if backend == "postgresql":
        from tests.pgschema import fresh_schema

        return stack.enter_context(fresh_schema(request.getfixturevalue("postgresql_url")))
    if backend == "redis":
        import redis

        url: str = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        return url
    return ""
