"""Cache in a PostgreSQL table, by default in the storage's database.

``cache(key TEXT PRIMARY KEY, value TEXT, expires_at DOUBLE PRECISION)``
(schema: ``kiln/migrations/postgresql/cache``): ``value`` is the JSON text
(kept as written: the cache never queries inside it), ``expires_at`` a Unix
time on the **database's** clock, so every application server agrees on
what expired (``NULL``: never). Reads ignore expired rows; every
:data:`CLEANUP_EVERY` writes of a process also delete them, in the same
round trip.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import orjson

from kiln._postgresql import PostgreSQLDatabase, database_for
from kiln._sql import SQLBackend
from kiln.cache import CacheBase

__all__ = ["PostgreSQLCache", "load"]

# ``noqa: S608``: the SQL joins constants of this module; values are bound.

CLEANUP_EVERY = 100


_NOW = "extract(epoch FROM clock_timestamp())::float8"
_LIVE = f"key = %(key)s AND (expires_at IS NULL OR expires_at > {_NOW})"
_SET = (
    "INSERT INTO cache (key, value, expires_at)"  # noqa: S608
    f" VALUES (%(key)s, %(value)s, {_NOW} + %(ttl)s::float8)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_CLEANUP = f"DELETE FROM cache WHERE expires_at <= {_NOW}"  # noqa: S608


class PostgreSQLCache(SQLBackend[PostgreSQLDatabase], CacheBase):
    """A cache table in a PostgreSQL database.

    Settings (read by :func:`kiln.cache.load_cache`): ``cache.url`` (default:
    ``storage.url``; the same URL shares the storage's pool and units of
    work), ``cache.prefix``, ``storage.pool_size``,
    ``storage.pool_timeout_seconds``, ``storage.connect_timeout_seconds``,
    ``storage.statement_timeout_ms``.
    """

    component = "cache"

    def __init__(self, database: PostgreSQLDatabase | str, prefix: str = "") -> None:
        super().__init__(prefix)
        if isinstance(database, str):
            database = PostgreSQLDatabase.shared(database)
        self.database = database
        self._writes = count(1)

    def flush(self) -> None:
        self._write("DELETE FROM cache WHERE starts_with(key, %(key)s)", {"key": self.prefix})

    def heartbeat(self) -> bool:
        return CacheBase.heartbeat(self)  # the cache's round trip, not SQLBackend's read

    def _write(self, statement: str, params: dict[str, Any]) -> Any:
        """Run a write statement; return its first row (with ``RETURNING``), else None."""
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            cursor = db.execute(conn, statement, params)
            return cursor.fetchone() if cursor.description else None

    def _read(self, statement: str, key: str) -> Any:
        db = self.database
        with db.transaction() as conn:
            return db.execute(conn, statement, {"key": self.prefix + key}).fetchone()

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        params = {"key": self.prefix + key, "value": orjson.dumps(value).decode(), "ttl": ttl}
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            if next(self._writes) % CLEANUP_EVERY == 0:
                db.pipeline(conn, (_SET, params), (_CLEANUP, None))
            else:
                db.execute(conn, _SET, params)

    def get(self, key: str) -> Any:
        row = self._read(f"SELECT value FROM cache WHERE {_LIVE}", key)  # noqa: S608
        return None if row is None else orjson.loads(row[0])

    def delete(self, key: str) -> Any:
        row = self._write(
            "DELETE FROM cache WHERE key = %(key)s"  # noqa: S608
            f" RETURNING value, expires_at IS NULL OR expires_at > {_NOW}",
            {"key": self.prefix + key},
        )
        if row is None or not row[1]:
            return None  # absent, or expired
        return orjson.loads(row[0])

    def expire(self, key: str, ttl: float) -> None:
        self._write(
            f"UPDATE cache SET expires_at = {_NOW} + %(ttl)s::float8 WHERE {_LIVE}",  # noqa: S608
            {"key": self.prefix + key, "ttl": ttl},
        )

    def ttl(self, key: str) -> float:
        row = self._read(f"SELECT expires_at - {_NOW} FROM cache WHERE {_LIVE}", key)  # noqa: S608
        if row is None or row[0] is None:
            return -1.0
        return float(row[0])


def load(config: Any) -> PostgreSQLCache:
    """The backend of ``cache.backend = "postgresql"``: ``cache.url`` (default:
    ``storage.url``) and ``cache.prefix``; on the storage's URL it shares its
    pool and units of work."""
    url = config.setting("cache.url") or config.setting("storage.url")
    return PostgreSQLCache(database_for(config, url), prefix=config.setting("cache.prefix"))
