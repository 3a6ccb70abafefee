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
from collections.abc import Sequence
from typing import Any

import orjson

from kiln._sql import SQLBackend
from kiln._sqlite import SQLiteDatabase
from kiln.storage import (
    ABSENT,
    LIVE,
    AppliedWrites,
    Filter,
    Operator,
    Record,
    RecordNotFoundError,
    Sort,
    Write,
    WriteConflict,
    check_writes,
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
_SELECT_STAMP = f"SELECT last_modified, deleted FROM records WHERE {_IN_COLLECTION} AND id = ?"  # noqa: S608
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


def _row_to_record(row: tuple[str, int, int, str]) -> Record:
    object_id, last_modified, _deleted, data = row
    record: Record = orjson.loads(data)
    record["id"] = object_id
    record["last_modified"] = last_modified
    return record


class SQLiteStorage(SQLBackend[SQLiteDatabase], AppliedWrites):
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

    # -- units of work: the flush ------------------------------------

    def apply(self, writes: Sequence[Write], *, commit: bool = False) -> list[int]:
        """The flush: every write checked and made under one ``BEGIN IMMEDIATE``
        (the database's write lock, held to the commit that ends the unit of
        work: the unit's flush is the last thing it does). Records are encoded
        before the lock is taken; a conflict undoes this call's writes only
        (a savepoint), so a unit of work that goes on keeps its earlier ones."""
        if not writes:
            return []
        check_writes(writes)
        encoded = [None if w.record is None else self._data(w.record) for w in writes]
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.execute("SAVEPOINT kiln_apply")
            try:
                timestamps = self._apply(conn, writes, encoded)
            except WriteConflict:
                conn.execute("ROLLBACK TO SAVEPOINT kiln_apply")
                raise
            finally:
                conn.execute("RELEASE SAVEPOINT kiln_apply")
        return timestamps

    def _apply(
        self, conn: sqlite3.Connection, writes: Sequence[Write], encoded: list[str | None]
    ) -> list[int]:
        currents: dict[tuple[str, str], int] = {}
        timestamps = []
        for index, (write, data) in enumerate(zip(writes, encoded, strict=True)):
            key = (write.resource_name, write.parent_id)
            current = currents.get(key)
            if current is None:
                current = currents[key] = self._timestamp(conn, *key)
            row = conn.execute(_SELECT_STAMP, (*key, write.object_id)).fetchone()
            stored = None if row is None or row[1] else int(row[0])
            if write.expected == ABSENT:
                if stored is not None or write.record is None:
                    raise WriteConflict(index)
            elif write.expected == LIVE:
                if stored is None:
                    raise WriteConflict(index)
            elif stored != write.expected:
                raise WriteConflict(index)
            if write.record is not None and self._holds_unique(conn, write):
                raise WriteConflict(index)
            floor = current if stored is None else stored
            if write.forced is not None and write.forced > floor:
                timestamp = write.forced
            else:
                timestamp = max(_now_ms(), current + 1)
            currents[key] = max(current, timestamp)
            if data is None:
                conn.execute(_BURY, (timestamp, *key, write.object_id))
            else:
                conn.execute(_UPSERT_RECORD, (*key, write.object_id, timestamp, data))
            timestamps.append(timestamp)
        conn.executemany(_UPSERT_TIMESTAMP, [(*key, stamp) for key, stamp in currents.items()])
        return timestamps

    @staticmethod
    def _holds_unique(conn: sqlite3.Connection, write: Write) -> bool:
        """Whether another live record holds a value of the write's unique fields."""
        assert write.record is not None
        for field in write.unique_fields:
            value = get_path(write.record, field)
            if value is MISSING or value is None:
                continue
            params: Params = [write.resource_name, write.parent_id, write.object_id]
            condition = compile_filter(Filter(field, value, Operator.EQ), params)
            row = conn.execute(
                f"SELECT 1 FROM records WHERE {_IN_COLLECTION} AND deleted = 0"  # noqa: S608
                f" AND id <> ? AND {condition} LIMIT 1",
                params,
            ).fetchone()
            if row is not None:
                return True
        return False

    @staticmethod
    def _data(record: Record) -> str:
        return orjson.dumps(
            {k: v for k, v in record.items() if k not in ("id", "last_modified")}
        ).decode()

    def _timestamp(self, conn: sqlite3.Connection, resource_name: str, parent_id: str) -> int:
        row = conn.execute(_SELECT_TIMESTAMP, (resource_name, parent_id)).fetchone()
        return int(row[0]) if row is not None else 0

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        with self.database.transaction() as conn:
            return self._timestamp(conn, resource_name, parent_id)

    # -- single records (create, update, delete: AppliedWrites) --------

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        with self.database.transaction() as conn:
            row = conn.execute(_SELECT_ONE, (resource_name, parent_id, object_id)).fetchone()
        if row is None or row[2]:
            raise RecordNotFoundError(object_id)
        return _row_to_record(row)

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

    def list_descendants(self, parent_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """One statement, served by an index whatever the table's size:
        the resource names are found by skipping through the key (one probe
        each), then, for each name and ancestor, the key's range of parent ids
        from the ancestor up to the ancestor followed by ``0`` (``/`` and
        ``0`` are neighbours in byte order), checked again for the ancestor
        itself or the ancestor and ``/``. ``CROSS JOIN`` keeps SQLite's loops
        in that order, and ``INDEXED BY`` its index on ``(resource_name,
        parent_id, ...)``: once ``ANALYZE`` has run, SQLite would rather build
        a temporary index on ``deleted`` at each call (a second on 300,000
        records, against 2 ms)."""
        ancestors = [ancestor for ancestor in parent_ids if ancestor]
        if not ancestors:
            return []
        rows = ", ".join(["(?, ?, ?)"] * len(ancestors))
        params: Params = []
        for ancestor in ancestors:
            params += [ancestor, ancestor + "0", ancestor + "/"]
        sql = (
            "WITH RECURSIVE names(name) AS ("  # noqa: S608 - placeholders only
            " SELECT min(resource_name) FROM records"
            " UNION ALL SELECT (SELECT min(resource_name) FROM records"
            " WHERE resource_name > names.name) FROM names WHERE names.name IS NOT NULL),"
            f" ancestors(low, high, prefix) AS (VALUES {rows})"
            " SELECT DISTINCT r.resource_name, r.parent_id, r.id"
            " FROM names CROSS JOIN ancestors AS a"
            " CROSS JOIN records AS r INDEXED BY records_last_modified"
            " WHERE r.resource_name = names.name"
            " AND r.parent_id >= a.low AND r.parent_id < a.high"
            " AND (r.parent_id = a.low OR substr(r.parent_id, 1, length(a.prefix)) = a.prefix)"
            " AND r.deleted = 0"
            " ORDER BY 1, 2, 3"
        )
        with self.database.transaction() as conn:
            return [(row[0], row[1], row[2]) for row in conn.execute(sql, params)]

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
