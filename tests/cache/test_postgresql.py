from __future__ import annotations

import pytest

from kiln._postgresql import PostgreSQLDatabase
from kiln.cache import load_cache
from kiln.cache.postgresql import PostgreSQLCache
from kiln.cache.testing import CacheContract
from kiln.config import Configuration
from tests.pgschema import fresh_schema


class TestPostgreSQLCache(CacheContract):
    @pytest.fixture
    def backend(self, postgresql_database, prefix):
        return PostgreSQLCache(postgresql_database, prefix=prefix)

    @pytest.fixture
    def other_prefix_backend(self, postgresql_database, backend):
        return PostgreSQLCache(postgresql_database, prefix="other:")

    @pytest.fixture
    def broken_backend(self, broken_postgresql_database):
        return PostgreSQLCache(broken_postgresql_database)


def test_initialize_schema_reports_its_steps(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        cache = PostgreSQLCache(database)
        steps = cache.initialize_schema(dry_run=True)
        assert steps == [
            "create table schema_versions",
            "create table cache",
            "create index cache_expires_at",
            "record cache schema version 1",
        ]
        assert cache.heartbeat() is False
        assert cache.initialize_schema() == steps
        assert cache.initialize_schema() == []
        database.close()


def test_load_cache_reads_its_own_url_and_prefix(schema_url):
    config = Configuration.from_mapping(
        {
            "storage": {"backend": "postgresql", "url": "postgresql://kiln@storage.invalid/kiln"},
            "cache": {"url": schema_url, "prefix": "svc:"},
        }
    )
    cache = load_cache(config)
    assert isinstance(cache, PostgreSQLCache)
    assert cache.prefix == "svc:"
    assert cache.database is PostgreSQLDatabase.shared(schema_url)
    assert PostgreSQLCache(schema_url).database is cache.database
    cache.close()


def test_expiry_follows_the_database_clock(schema_url):
    database = PostgreSQLDatabase(schema_url)
    cache = PostgreSQLCache(database)
    cache.initialize_schema()
    cache.set("k", "v", ttl=30)
    with database.transaction() as conn:
        expires_at, now = database.execute(
            conn,
            "SELECT expires_at, extract(epoch FROM clock_timestamp())::float8"
            " FROM cache WHERE key = 'k'",
        ).fetchone()
    assert 29 < expires_at - now <= 30
    database.close()


def test_a_cache_write_in_a_failed_unit_of_work_is_rolled_back(schema_url):
    database = PostgreSQLDatabase(schema_url)
    cache = PostgreSQLCache(database)
    cache.initialize_schema()

    def fail():
        with database.transaction():
            cache.set("rolled-back", 1)
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert cache.get("rolled-back") is None
    database.close()
