"""Cache in a SQLite table, by default in the storage's file.

``cache(key TEXT PRIMARY KEY, value TEXT, expires_at REAL)`` (schema:
``kiln/migrations/sqlite/cache``): ``value`` is the JSON text,
``expires_at`` a Unix time (``NULL``: never). Reads ignore expired rows;
every :data:`CLEANUP_EVERY` writes of a process also delete them.
"""

from __future__ import annotations

import time
from itertools import count
from typing import Any

import orjson

from kiln._sql import SQLBackend
from kiln._sqlite import SQLiteDatabase
from kiln.cache import CacheBase

__all__ = ["SQLiteCache", "load"]

# ``noqa: S608``: the SQL joins constants of this module; values are bound.

CLEANUP_EVERY = 100

_LIVE = "key = ? AND (expires_at IS NULL OR expires_at > ?)"
_SET = (
    "INSERT INTO cache (key, value, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)


class SQLiteCache(SQLBackend[SQLiteDatabase], CacheBase):
    """A cache table in a SQLite database.

    Settings (read by :func:`kiln.cache.load_cache`): ``cache.url`` (default:
    ``storage.url``), ``cache.prefix``.
    """

    component = "cache"

    def __init__(self, database: SQLiteDatabase | str = "kiln.sqlite", prefix: str = "") -> None:
        super().__init__(prefix)
        if isinstance(database, str):
            database = SQLiteDatabase.shared(database)
        self.database = database
        self._writes = count(1)

    def flush(self) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.execute(
                "DELETE FROM cache WHERE substr(key, 1, ?) = ?", (len(self.prefix), self.prefix)
            )

    def heartbeat(self) -> bool:
        return CacheBase.heartbeat(self)  # the cache's round trip, not SQLBackend's read

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        encoded = orjson.dumps(value).decode()
        now = time.time()
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.execute(_SET, (self.prefix + key, encoded, None if ttl is None else now + ttl))
            if next(self._writes) % CLEANUP_EVERY == 0:
                conn.execute("DELETE FROM cache WHERE expires_at <= ?", (now,))

    def get(self, key: str) -> Any:
        with self.database.transaction() as conn:
            row = conn.execute(
                f"SELECT value FROM cache WHERE {_LIVE}",  # noqa: S608
                (self.prefix + key, time.time()),
            ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def delete(self, key: str) -> Any:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            rows = conn.execute(
                "DELETE FROM cache WHERE key = ? RETURNING value, expires_at", (self.prefix + key,)
            ).fetchall()
        row = rows[0] if rows else None
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return orjson.loads(row[0])

    def expire(self, key: str, ttl: float) -> None:
        now = time.time()
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.execute(
                f"UPDATE cache SET expires_at = ? WHERE {_LIVE}",  # noqa: S608
                (now + ttl, self.prefix + key, now),
            )

    def ttl(self, key: str) -> float:
        now = time.time()
        with self.database.transaction() as conn:
            row = conn.execute(
                f"SELECT expires_at FROM cache WHERE {_LIVE}",  # noqa: S608
                (self.prefix + key, now),
            ).fetchone()
        if row is None or row[0] is None:
            return -1.0
        return float(row[0]) - now


def load(config: Any) -> SQLiteCache:
    """The backend of ``cache.backend = "sqlite"``: ``cache.url`` (default: ``storage.url``)
    and ``cache.prefix``; it shares the storage's file and connections when the
    URLs are the same."""
    url = config.setting("cache.url") or config.setting("storage.url")
    database = SQLiteDatabase.shared(
        url, busy_timeout=float(config.setting("storage.busy_timeout_seconds"))
    )
    return SQLiteCache(database, prefix=config.setting("cache.prefix"))
