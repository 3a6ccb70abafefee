from __future__ import annotations

import pytest

from kiln.cache import load_cache
from kiln.cache.memory import MemoryCache
from kiln.cache.testing import CacheContract
from kiln.config import Configuration


class TestMemoryCache(CacheContract):
    @pytest.fixture
    def backend(self, prefix):
        return MemoryCache(prefix=prefix)


def test_load_cache_builds_a_memory_cache_with_the_prefix():
    cache = load_cache(
        Configuration.from_mapping({"cache": {"backend": "memory", "prefix": "svc:"}})
    )
    assert isinstance(cache, MemoryCache)
    assert cache.prefix == "svc:"
