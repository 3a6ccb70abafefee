from __future__ import annotations

import pytest

from kiln import _redis
from kiln.cache import load_cache
from kiln.cache.redis import RedisCache
from kiln.cache.testing import CacheContract
from kiln.config import Configuration
from kiln.exceptions import ConfigError


class TestRedisCache(CacheContract):
    @pytest.fixture
    def backend(self, redis_connection, prefix):
        return RedisCache(redis_connection.url, prefix=prefix)

    @pytest.fixture
    def other_prefix_backend(self, redis_connection, backend, closing):
        return closing(RedisCache(redis_connection.url, prefix="other:"))

    @pytest.fixture
    def broken_backend(self, broken_redis_url, closing):
        return closing(RedisCache(broken_redis_url))


@pytest.fixture
def connection(redis_connection):
    return redis_connection


@pytest.fixture
def cache(connection, closing):
    return closing(RedisCache(connection.url, prefix="svc*:"))


def test_entries_are_redis_keys_with_native_ttls(cache, connection):
    cache.set("k", {"a": 1}, ttl=30)
    cache.set("forever", 1)
    client = connection.client
    assert sorted(client.keys("*")) == [b"kiln:cache:svc*:forever", b"kiln:cache:svc*:k"]
    assert client.get("kiln:cache:svc*:k") == b'{"a":1}'
    assert 29_000 < client.pttl("kiln:cache:svc*:k") <= 30_000
    assert client.pttl("kiln:cache:svc*:forever") == -1


def test_a_zero_or_negative_ttl_removes_the_entry(cache):
    cache.set("k", 1)
    cache.set("k", 2, ttl=0)
    assert cache.get("k") is None
    cache.set("k", 3, ttl=0.0001)
    assert cache.get("k") is None
    cache.set("k", 4)
    cache.expire("k", -1)
    assert cache.get("k") is None


def test_flush_takes_the_prefix_literally(cache, connection):
    connection.client.set("kiln:cache:svcX:k", b"1")
    cache.set("k", 1)
    cache.flush()
    assert connection.client.keys("*") == [b"kiln:cache:svcX:k"]


def test_a_url_string_opens_the_shared_connection(redis_url):
    connection = _redis.acquire(redis_url)
    cache = RedisCache(redis_url, prefix="p:")
    try:
        assert cache.connection is connection
        assert cache.prefix == "p:"
    finally:
        cache.close()
        cache.close()
        assert connection.users == 1
        connection.release()


def test_load_cache_follows_the_storage_backend_and_url(redis_url):
    config = Configuration.from_mapping(
        {"storage": {"backend": "redis", "url": redis_url}, "cache": {"prefix": "svc:"}}
    )
    cache = load_cache(config)
    try:
        assert isinstance(cache, RedisCache)
        assert cache.connection.url == redis_url
        assert cache.prefix == "svc:"
        assert cache.heartbeat() is True
    finally:
        cache.close()


def test_load_cache_reads_its_own_url(redis_url):
    own = redis_url.rsplit("/", 1)[0] + "/14"
    config = Configuration.from_mapping({"cache": {"backend": "redis", "url": own}})
    cache = load_cache(config)
    try:
        assert cache.connection.url == own
    finally:
        cache.close()


def test_load_cache_refuses_a_sqlite_url():
    config = Configuration.from_mapping({"cache": {"backend": "redis"}})
    with pytest.raises(ConfigError, match=r"cache\.backend is 'redis' but cache\.url"):
        load_cache(config)
