"""The cache contract suite: every backend runs it unchanged.

Subclass :class:`CacheContract` and override its ``backend`` fixture with a
fresh backend using the prefix it is given::

    class TestSQLiteCache(CacheContract):
        @pytest.fixture
        def backend(self, tmp_path, prefix):
            return SQLiteCache(SQLiteDatabase(str(tmp_path / "db.sqlite")), prefix=prefix)

``other_prefix_backend`` builds a second backend of the same store with
another prefix (the prefix tests skip when not overridden), and
``broken_backend`` one whose engine fails. The fixtures every suite shares,
and the lifecycle tests, come from :class:`kiln._contract.BackendContract`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kiln._contract import BackendContract
from kiln.cache import CacheBase
from kiln.exceptions import BackendError

__all__ = ["CacheContract"]


class CacheContract(BackendContract):
    """The cache contract, as pytest tests; override :meth:`backend`."""

    @pytest.fixture
    def prefix(self) -> str:
        return "test:"

    @pytest.fixture
    def backend(self, prefix: str) -> CacheBase:
        raise NotImplementedError("Override the backend fixture with a fresh backend.")

    @pytest.fixture
    def other_prefix_backend(self, backend: CacheBase) -> CacheBase:
        pytest.skip("This backend declares no second prefix on the same store.")

    @pytest.fixture
    def cache(self, ready: CacheBase) -> CacheBase:
        return ready

    def test_heartbeat_leaves_no_key(self, cache: CacheBase) -> None:
        assert cache.heartbeat() is True
        assert cache.get("__heartbeat__") is None

    @pytest.mark.parametrize(
        "value",
        ["text", 1, 1.5, True, None, [1, "a"], {"nested": {"k": [1, 2]}}, "ünï 🍄 '\"%_*", ""],
    )
    def test_set_then_get_returns_the_decoded_value(self, cache: CacheBase, value: Any) -> None:
        cache.set("key", value)
        assert cache.get("key") == value

    def test_get_of_a_missing_key_is_none(self, cache: CacheBase) -> None:
        assert cache.get("nope") is None

    def test_set_replaces_value_and_ttl(self, cache: CacheBase) -> None:
        cache.set("key", 1, ttl=100)
        cache.set("key", 2)
        assert cache.get("key") == 2
        assert cache.ttl("key") < 0

    def test_a_key_past_its_ttl_is_absent(self, cache: CacheBase) -> None:
        cache.set("short", "v", ttl=0.05)
        cache.set("long", "v", ttl=100)
        assert cache.get("short") == "v"
        time.sleep(0.08)
        assert cache.get("short") is None
        assert cache.ttl("short") < 0
        assert cache.delete("short") is None
        assert cache.get("long") == "v"

    def test_ttl_counts_down(self, cache: CacheBase) -> None:
        cache.set("key", "v", ttl=10)
        assert 9 < cache.ttl("key") <= 10
        assert cache.ttl("missing") < 0
        cache.set("forever", "v")
        assert cache.ttl("forever") < 0

    def test_expire_sets_a_ttl_on_an_existing_key_only(self, cache: CacheBase) -> None:
        cache.set("key", "v")
        cache.expire("key", 0.05)
        assert 0 < cache.ttl("key") <= 0.05
        cache.expire("missing", 10)
        assert cache.get("missing") is None
        time.sleep(0.08)
        assert cache.get("key") is None
        cache.expire("key", 10)
        assert cache.get("key") is None

    def test_delete_returns_the_value_it_removed(self, cache: CacheBase) -> None:
        cache.set("key", {"a": 1})
        assert cache.delete("key") == {"a": 1}
        assert cache.get("key") is None
        assert cache.delete("key") is None

    def test_many_writes_keep_live_keys_and_drop_expired_ones(self, cache: CacheBase) -> None:
        cache.set("keep", 1)
        for n in range(250):
            cache.set(f"k{n}", n, ttl=0.01 if n < 200 else 100)
        time.sleep(0.02)
        for n in range(250, 450):
            cache.set(f"k{n}", n, ttl=100)
        assert cache.get("keep") == 1
        assert cache.get("k5") is None
        assert cache.get("k420") == 420

    def test_flush_removes_every_key(self, cache: CacheBase) -> None:
        cache.set("a", 1)
        cache.set("b", 2, ttl=10)
        cache.flush()
        assert cache.get("a") is None
        assert cache.get("b") is None

    def test_prefixes_separate_services(
        self, cache: CacheBase, other_prefix_backend: CacheBase
    ) -> None:
        other = other_prefix_backend
        cache.set("key", "mine")
        assert other.get("key") is None
        other.set("key", "theirs", ttl=10)
        assert cache.get("key") == "mine"
        assert cache.ttl("key") < 0
        cache.expire("key", 50)
        assert other.ttl("key") <= 10
        other.flush()
        assert cache.get("key") == "mine"
        assert other.delete("key") is None

    def test_engine_failures_surface_as_backend_error(self, broken_backend: CacheBase) -> None:
        with pytest.raises(BackendError):
            broken_backend.set("key", 1)
        with pytest.raises(BackendError):
            broken_backend.get("key")
        assert broken_backend.heartbeat() is False
