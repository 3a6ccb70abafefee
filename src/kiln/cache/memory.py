"""In-process cache: a dict of JSON-encoded values with expiry times."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from kiln.cache import CacheBase

__all__ = ["MemoryCache", "load"]

#: Expired entries are swept every this many ``set`` calls.
CLEANUP_EVERY = 100


class MemoryCache(CacheBase):
    """A cache in this process's memory. Reads ``cache.prefix``.

    Expiry is checked on every read; expired entries are also swept every
    :data:`CLEANUP_EVERY` writes so unread keys do not pile up.
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__(prefix)
        self._entries: dict[str, tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        return []

    def flush(self) -> None:
        with self._lock:
            for key in [k for k in self._entries if k.startswith(self.prefix)]:
                del self._entries[key]

    def _live(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, at) in self._entries.items() if at is not None and at <= now]:
            del self._entries[key]

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        encoded = orjson.dumps(value)
        now = time.monotonic()
        with self._lock:
            self._entries[self.prefix + key] = (encoded, None if ttl is None else now + ttl)
            self._writes += 1
            if self._writes % CLEANUP_EVERY == 0:
                self._sweep(now)

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._live(self.prefix + key, time.monotonic())
        return None if entry is None else orjson.loads(entry[0])

    def delete(self, key: str) -> Any:
        with self._lock:
            entry = self._live(self.prefix + key, time.monotonic())
            if entry is None:
                return None
            del self._entries[self.prefix + key]
        return orjson.loads(entry[0])

    def expire(self, key: str, ttl: float) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self._live(self.prefix + key, now)
            if entry is not None:
                self._entries[self.prefix + key] = (entry[0], now + ttl)

    def ttl(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            entry = self._live(self.prefix + key, now)
        if entry is None or entry[1] is None:
            return -1.0
        return entry[1] - now


def load(config: Any) -> MemoryCache:
    """The backend of ``cache.backend = "memory"``: ``cache.prefix``."""
    return MemoryCache(prefix=config.setting("cache.prefix"))
