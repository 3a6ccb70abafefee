from __future__ import annotations

import pytest

from kiln._sqlite import SQLiteDatabase
from kiln.cache import load_cache
from kiln.cache.sqlite import SQLiteCache
from kiln.cache.testing import CacheContract
from kiln.config import Configuration
from kiln.exceptions import ConfigError
from kiln.storage import load_storage


class TestSQLiteCache(CacheContract):
    @pytest.fixture
    def backend(self, sqlite_database, prefix):
        return SQLiteCache(sqlite_database, prefix=prefix)

    @pytest.fixture
    def other_prefix_backend(self, sqlite_database, backend):
        return SQLiteCache(sqlite_database, prefix="other:")

    @pytest.fixture
    def broken_backend(self, tmp_path):
        return SQLiteCache(SQLiteDatabase(str(tmp_path / "missing" / "kiln.sqlite")))


def test_initialize_schema_reports_its_steps(tmp_path):
    cache = SQLiteCache(SQLiteDatabase(str(tmp_path / "kiln.sqlite")))
    steps = cache.initialize_schema(dry_run=True)
    assert "create table cache" in steps
    assert cache.initialize_schema() == steps
    assert cache.initialize_schema() == []


def test_the_cache_shares_the_storage_file_by_default(tmp_path):
    url = str(tmp_path / "one.sqlite")
    config = Configuration.from_mapping({"storage": {"url": url}, "cache": {"prefix": "p:"}})
    storage = load_storage(config)
    cache = load_cache(config)
    assert isinstance(cache, SQLiteCache)
    assert cache.database is storage.database
    storage.initialize_schema()
    cache.initialize_schema()
    with storage.transaction():
        storage.create("r", "", {"id": "a"})
        cache.set("k", 1)
    assert cache.get("k") == 1
    storage.close()


def test_a_cache_write_in_a_failed_unit_of_work_is_rolled_back(tmp_path):
    database = SQLiteDatabase(str(tmp_path / "kiln.sqlite"))
    cache = SQLiteCache(database)
    cache.initialize_schema()

    def fail():
        with database.transaction():
            cache.set("k", 1)
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert cache.get("k") is None


def test_load_cache_explains_an_unknown_backend():
    config = Configuration.from_mapping({"cache": {"backend": "memcached"}})
    with pytest.raises(ConfigError, match=r"cache\.backend 'memcached' is not known"):
        load_cache(config)
