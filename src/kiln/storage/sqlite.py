"""Storage in a SQLite file (stdlib :mod:`sqlite3`, WAL), the embedded default.

Layout (schema version 1, ``kiln/migrations/sqlite/storage``; see
``docs/storage.md`` for the reasons)::

    records(resource_name, parent_id, id, last_modified, deleted, data)
        PRIMARY KEY (resource_name, parent_id, id)
        INDEX (resource_name, parent_id, last_modified)
    timestamps(resource_name, parent_id, last_modified)  PRIMARY KEY (resource_name, parent_id)
    schema_versions(component, version)

``data`` is the record's JSON without ``id`` and ``last_modified`` (they
are columns); a tombstone is the same row with ``deleted = 1`` and ``data =
'{"deleted":true}'``, so a delete is one ``UPDATE`` and a re-create one
upsert. Filters and sorts on fields compile to SQL over ``json_type`` and
``json_extract`` with the JSON path bound as a parameter
(:mod:`kiln.storage._sqlite_sql`); the SQL text depends only on the *shape*
of a query (operators and value types), so :mod:`sqlite3`'s statement
cache serves repeated queries.

Every write of a unit of work runs under ``BEGIN IMMEDIATE`` (see
:mod:`kiln._sqlite`): checks (``if_match``, unicity) and the write share one
write lock, and the collection timestamp ``max(now, current + 1)`` is taken
inside it, so timestamps increase in commit order.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from kiln._sql import SQLBackend
from kiln._sqlite import SQLiteDatabase
from kiln.storage import (
    Filter,
    Operator,
    PreconditionFailed,
    Record,
    RecordNotFoundError,
    Sort,
    StorageBase,
    UnicityError,
)
from kiln.storage._python_filters import MISSING, get_path
from kiln.storage._sqlite_sql import Params, compile_filter, compile_order, compile_where

__all__ = ["SQLiteStorage", "load"]

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module and :mod:`kiln.storage._sqlite_sql`; every value,
# and every user-given field name (as a JSON path), is a bound parameter.

_TOMBSTONE_DATA = '{"deleted":true}'
_COLUMNS = "id, last_modified, deleted, data"
_IN_COLLECTION = "resource_name = ? AND parent_id = ?"

_SELECT_ONE = f"SELECT {_COLUMNS} FROM records WHERE {_IN_COLLECTION} AND id = ?"  # noqa: S608
_SELECT_TIMESTAMP = f"SELECT last_modified FROM timestamps WHERE {_IN_COLLECTION}"  # noqa: S608
_UPSERT_TIMESTAMP = (
    "INSERT INTO timestamps (resource_name, parent_id, last_modified) VALUES (?, ?, ?)"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE SET last_modified = excluded.last_modified"
)
_UPSERT_RECORD = (
    "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " VALUES (?, ?, ?, ?, 0, ?)"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = 0, data = excluded.data"
)
_BURY = (
    f"UPDATE records SET deleted = 1, last_modified = ?, data = '{_TOMBSTONE_DATA}'"  # noqa: S608
    f" WHERE {_IN_COLLECTION} AND id = ?"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _forced(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _row_to_record(row: tuple[str, int, int, str]) -> Record:
    object_id, last_modified, _deleted, data = row
    record: Record = orjson.loads(data)
    record["id"] = object_id
    record["last_modified"] = last_modified
    return record


class SQLiteStorage(SQLBackend[SQLiteDatabase], StorageBase):
    """Storage in a SQLite database.

    Settings (read by :func:`kiln.storage.load_storage`): ``storage.url``
    (the file, default ``kiln.sqlite``; ``:memory:``), and
    ``storage.busy_timeout_seconds``.

    :param database: a :class:`~kiln._sqlite.SQLiteDatabase`, or a path
        (then the process-wide shared database for that path).
    """

    component = "storage"
    heartbeat_table = "timestamps"

    def __init__(self, database: SQLiteDatabase | str = "kiln.sqlite") -> None:
        if isinstance(database, str):
            database = SQLiteDatabase.shared(database)
        self.database = database

    # -- lifecycle (initialize_schema, heartbeat, close, transaction: SQLBackend)

    def flush(self) -> None:
        with self.database.transaction() as conn:
            self.database.begin_write(conn)
            conn.execute("DELETE FROM records")
            conn.execute("DELETE FROM timestamps")

    def snapshot(self) -> Any:
        return self.database.snapshot()

    # -- helpers -------------------------------------------------------

    def _timestamp(self, conn: sqlite3.Connection, resource_name: str, parent_id: str) -> int:
        row = conn.execute(_SELECT_TIMESTAMP, (resource_name, parent_id)).fetchone()
        return int(row[0]) if row is not None else 0

    def _next_timestamp(
        self,
        conn: sqlite3.Connection,
        resource_name: str,
        parent_id: str,
        forced: int | None = None,
        floor: int | None = None,
    ) -> int:
        """A timestamp for the next change (call holding the write lock)."""
        current = self._timestamp(conn, resource_name, parent_id)
        if forced is not None and forced > (current if floor is None else floor):
            timestamp = forced
        else:
            timestamp = max(_now_ms(), current + 1)
        conn.execute(_UPSERT_TIMESTAMP, (resource_name, parent_id, max(current, timestamp)))
        return timestamp

    @staticmethod
    def _check_unique(
        conn: sqlite3.Connection,
        resource_name: str,
        parent_id: str,
        record: Record,
        object_id: str,
        unique_fields: Sequence[str],
    ) -> None:
        for field in unique_fields:
            value = get_path(record, field)
            if value is MISSING or value is None:
                continue
            params: Params = [resource_name, parent_id, object_id]
            condition = compile_filter(Filter(field, value, Operator.EQ), params)
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE {_IN_COLLECTION} AND deleted = 0"  # noqa: S608
                f" AND id <> ? AND {condition} LIMIT 1",
                params,
            ).fetchone()
            if row is not None:
                raise UnicityError(field, _row_to_record(row))

    @staticmethod
    def _data(record: Record) -> str:
        return orjson.dumps(
            {k: v for k, v in record.items() if k not in ("id", "last_modified")}
        ).decode()

    def _store(
        self,
        conn: sqlite3.Connection,
        resource_name: str,
        parent_id: str,
        object_id: str,
        data: str,
        timestamp: int,
    ) -> Record:
        conn.execute(_UPSERT_RECORD, (resource_name, parent_id, object_id, timestamp, data))
        record: Record = orjson.loads(data)
        record["id"] = object_id
        record["last_modified"] = timestamp
        return record

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        with self.database.transaction() as conn:
            return self._timestamp(conn, resource_name, parent_id)

    # -- single records ------------------------------------------------

    def create(
        self,
        resource_name: str,
        parent_id: str,
        record: Record,
        *,
        id_generator: Callable[[], str] | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        object_id = self.new_id(record, id_generator)
        data = self._data(record)
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            row = conn.execute(_SELECT_ONE, (resource_name, parent_id, object_id)).fetchone()
            if row is not None and not row[2]:
                raise UnicityError("id", _row_to_record(row))
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            timestamp = self._next_timestamp(
                conn, resource_name, parent_id, _forced(record.get("last_modified"))
            )
            return self._store(conn, resource_name, parent_id, object_id, data, timestamp)

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        with self.database.transaction() as conn:
            row = conn.execute(_SELECT_ONE, (resource_name, parent_id, object_id)).fetchone()
        if row is None or row[2]:
            raise RecordNotFoundError(object_id)
        return _row_to_record(row)

    def update(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        record: Record,
        *,
        if_match: int | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        data = self._data(record)
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            row = conn.execute(_SELECT_ONE, (resource_name, parent_id, object_id)).fetchone()
            live = row is not None and not row[2]
            if if_match is not None and not (live and row[1] == if_match):
                raise PreconditionFailed(_row_to_record(row) if live else None)
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            timestamp = self._next_timestamp(
                conn,
                resource_name,
                parent_id,
                _forced(record.get("last_modified")),
                row[1] if live else None,
            )
            return self._store(conn, resource_name, parent_id, object_id, data, timestamp)

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            row = conn.execute(_SELECT_ONE, (resource_name, parent_id, object_id)).fetchone()
            if row is None or row[2]:
                if if_match is not None:
                    raise PreconditionFailed(None)
                raise RecordNotFoundError(object_id)
            if if_match is not None and row[1] != if_match:
                raise PreconditionFailed(_row_to_record(row))
            return self._bury(conn, resource_name, parent_id, object_id, row[1], last_modified)

    def _bury(
        self,
        conn: sqlite3.Connection,
        resource_name: str,
        parent_id: str,
        object_id: str,
        previous: int,
        forced: int | None,
    ) -> Record:
        timestamp = self._next_timestamp(conn, resource_name, parent_id, _forced(forced), previous)
        conn.execute(_BURY, (timestamp, resource_name, parent_id, object_id))
        return {"id": object_id, "last_modified": timestamp, "deleted": True}

    # -- many records --------------------------------------------------

    def list_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        pagination_rules: Sequence[Sequence[Filter]] = (),
        limit: int | None = None,
        include_deleted: bool = False,
    ) -> list[Record]:
        params: Params = [resource_name, parent_id]
        live = "" if include_deleted else " AND deleted = 0"
        where = compile_where(filters, pagination_rules, params)
        order = compile_order(sorting, params)
        params.append(-1 if limit is None else max(limit, 0))
        sql = f"SELECT {_COLUMNS} FROM records WHERE {_IN_COLLECTION}{live}{where}{order} LIMIT ?"  # noqa: S608
        with self.database.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_row_to_record(row) for row in rows]

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        params: Params = [resource_name, parent_id]
        where = compile_where(filters, (), params)
        sql = f"SELECT COUNT(*) FROM records WHERE {_IN_COLLECTION} AND deleted = 0{where}"  # noqa: S608
        with self.database.transaction() as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        params: Params = [resource_name, parent_id]
        where = compile_where(filters, (), params)
        order = compile_order(sorting, params)
        params.append(-1 if limit is None else max(limit, 0))
        sql = (
            f"SELECT id, last_modified FROM records WHERE {_IN_COLLECTION} AND deleted = 0"  # noqa: S608
            f"{where}{order} LIMIT ?"
        )
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            rows = conn.execute(sql, params).fetchall()
            return [
                self._bury(conn, resource_name, parent_id, object_id, previous, None)
                for object_id, previous in rows
            ]

    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        sql = f"DELETE FROM records WHERE {_IN_COLLECTION} AND deleted = 1"  # noqa: S608
        params: Params = [resource_name, parent_id]
        if before is not None:
            sql += " AND last_modified < ?"
            params.append(before)
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            return conn.execute(sql, params).rowcount


def load(config: Any) -> SQLiteStorage:
    """The backend of ``storage.backend = "sqlite"``.

    Reads ``storage.url`` and ``storage.busy_timeout_seconds``.
    """
    database = SQLiteDatabase.shared(
        config.setting("storage.url"),
        busy_timeout=float(config.setting("storage.busy_timeout_seconds")),
    )
    return SQLiteStorage(database)
