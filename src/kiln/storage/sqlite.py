"""Storage in a SQLite file (stdlib :mod:`sqlite3`, WAL), the embedded default.

Layout (schema version 1; see ``docs/storage.md`` for the reasons)::

    records(resource_name, parent_id, id, last_modified, deleted, data)
        PRIMARY KEY (resource_name, parent_id, id)
        INDEX (resource_name, parent_id, last_modified)
    timestamps(resource_name, parent_id, last_modified)  PRIMARY KEY (resource_name, parent_id)
    schema_versions(component, version)

``data`` is the record's JSON without ``id`` and ``last_modified`` (they
are columns); a tombstone is the same row with ``deleted = 1`` and ``data =
'{"deleted":true}'``, so a delete is one ``UPDATE`` and a re-create one
upsert. Filters and sorts on fields compile to SQL over ``json_type`` and
``json_extract`` with the JSON path bound as a parameter; the SQL text
depends only on the *shape* of a query (operators and value types), so
:mod:`sqlite3`'s statement cache serves repeated queries.

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

from kiln._sqlite import SQLiteDatabase, to_sql_number
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
from kiln.storage._python_filters import (
    MISSING,
    RANK_ARRAY,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_STRING,
    get_path,
    is_number,
    type_rank,
)

__all__ = ["SQLiteStorage", "load"]

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module; every value, and every user-given field name
# (as a JSON path), is a bound parameter.

SCHEMA_VERSION = 1

_SCHEMA: tuple[tuple[str, str], ...] = (
    (
        "create table schema_versions",
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
    ),
    (
        "create table records",
        "CREATE TABLE IF NOT EXISTS records ("
        " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL, id TEXT NOT NULL,"
        " last_modified INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
        " data TEXT NOT NULL,"
        " PRIMARY KEY (resource_name, parent_id, id))",
    ),
    (
        "create index records_last_modified",
        "CREATE INDEX IF NOT EXISTS records_last_modified"
        " ON records (resource_name, parent_id, last_modified)",
    ),
    (
        "create table timestamps",
        "CREATE TABLE IF NOT EXISTS timestamps ("
        " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL,"
        " last_modified INTEGER NOT NULL,"
        " PRIMARY KEY (resource_name, parent_id)) WITHOUT ROWID",
    ),
)

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

# -- filters and sorts to SQL --------------------------------------------------

_RANK = (
    "CASE {t} WHEN 'null' THEN 0 WHEN 'false' THEN 1 WHEN 'true' THEN 2"
    " WHEN 'integer' THEN 3 WHEN 'real' THEN 3 WHEN 'text' THEN 4"
    " WHEN 'array' THEN 5 WHEN 'object' THEN 6 ELSE 7 END"
)
_SQL_OPERATORS = {Operator.LT: "<", Operator.GT: ">", Operator.MIN: ">=", Operator.MAX: "<="}
_JSON_TYPES = {None: "'null'", True: "'true'", False: "'false'"}

Params = list[Any]


class _Field:
    """How one dotted field reads in SQL: a column, or JSON functions over ``data``."""

    __slots__ = ("column", "extract_fn", "path", "rank", "type_fn")

    def __init__(self, field: str) -> None:
        self.column: str | None = None
        self.rank = 0
        if field in ("id", "last_modified"):
            self.column = field
            self.rank = RANK_STRING if field == "id" else RANK_NUMBER
        keys = field.split(".")
        if all(key and '"' not in key and "\\" not in key and key.isprintable() for key in keys):
            # Each key quoted: dots, brackets, $ and quotes other than " are literal.
            self.path = "$" + "".join(f'."{key}"' for key in keys)
            self.type_fn, self.extract_fn = "json_type", "json_extract"
        else:
            # SQLite paths cannot spell these keys: walk the JSON in Python.
            self.path = orjson.dumps(keys).decode()
            self.type_fn, self.extract_fn = "kiln_json_type", "kiln_json_extract"

    def type(self, params: Params) -> str:
        params.append(self.path)
        return f"{self.type_fn}(data, ?)"

    def extract(self, params: Params) -> str:
        params.append(self.path)
        return f"{self.extract_fn}(data, ?)"


def _bind(value: Any) -> Any:
    return to_sql_number(value) if is_number(value) else value


def _equal(field: _Field, value: Any, params: Params) -> str:
    if field.column is not None:
        if type_rank(value) != field.rank:
            return "0"
        params.append(_bind(value))
        return f"{field.column} = ?"
    if value is None or isinstance(value, bool):
        return f"{field.type(params)} = {_JSON_TYPES[value]}"
    if is_number(value):
        sql = f"({field.type(params)} IN ('integer', 'real') AND {field.extract(params)} = ?)"
        params.append(_bind(value))
        return sql
    if isinstance(value, str):
        sql = f"({field.type(params)} = 'text' AND {field.extract(params)} = ?)"
        params.append(value)
        return sql
    kind = "'array'" if isinstance(value, list) else "'object'"
    sql = f"({field.type(params)} = {kind} AND kiln_json_equal({field.extract(params)}, ?))"
    params.append(orjson.dumps(value).decode())
    return sql


def _one_of(field: _Field, values: list[Any], params: Params) -> str:
    if field.column is not None:
        kept = [_bind(v) for v in values if type_rank(v) == field.rank]
        if not kept:
            return "0"
        params.extend(kept)
        return f"{field.column} IN ({', '.join('?' * len(kept))})"
    return "(" + (" OR ".join(_equal(field, v, params) for v in values) or "0") + ")"


def _compare_class(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    symbol = _SQL_OPERATORS[operator]
    rank = type_rank(value)
    if rank not in (RANK_NUMBER, RANK_STRING):
        return "0"
    if field.column is not None:
        if rank != field.rank:
            return "0"
        params.append(_bind(value))
        return f"{field.column} {symbol} ?"
    kinds = "IN ('integer', 'real')" if rank == RANK_NUMBER else "= 'text'"
    sql = f"({field.type(params)} {kinds} AND {field.extract(params)} {symbol} ?)"
    params.append(_bind(value))
    return sql


def _compare_total(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    symbol = _SQL_OPERATORS[operator]
    rank = type_rank(value)
    strict = ">" if operator in (Operator.GT, Operator.MIN) else "<"
    if field.column is not None:
        if rank != field.rank:
            return "1" if eval_rank(field.rank, symbol, rank) else "0"
        params.append(_bind(value))
        return f"{field.column} {symbol} ?"
    field_rank = _RANK.format(t=field.type(params))
    if rank in (RANK_NUMBER, RANK_STRING, RANK_ARRAY, RANK_OBJECT):
        container = rank in (RANK_ARRAY, RANK_OBJECT)
        bound = orjson.dumps(value).decode() if container else _bind(value)
        sql = (
            f"({field_rank} {strict} {rank} OR ({_RANK.format(t=field.type(params))} = {rank}"
            f" AND {field.extract(params)} {symbol} ?))"
        )
        params.append(bound)
        return sql
    return f"{field_rank} {symbol} {rank}"


def eval_rank(left: int, symbol: str, right: int) -> bool:
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[symbol]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def compile_filter(filter_: Filter, params: Params, *, total_order: bool = False) -> str:
    """One filter as a SQL condition (never NULL), its parameters appended to ``params``."""
    field_name, value, operator = filter_
    field = _Field(field_name)
    if operator is Operator.EQ:
        return f"IFNULL({_equal(field, value, params)}, 0)"
    if operator is Operator.NOT:
        return f"NOT IFNULL({_equal(field, value, params)}, 0)"
    if operator is Operator.IN:
        return f"IFNULL({_one_of(field, _as_list(value), params)}, 0)"
    if operator is Operator.EXCLUDE:
        return f"NOT IFNULL({_one_of(field, _as_list(value), params)}, 0)"
    if operator is Operator.HAS:
        if field.column is not None:
            return "1" if value else "0"
        return f"{field.type(params)} IS {'NOT NULL' if value else 'NULL'}"
    if operator is Operator.LIKE:
        if not isinstance(value, str) or field.column == "last_modified":
            return "0"
        if field.column is not None:
            params.append(value)
            return f"kiln_like({field.column}, ?)"
        sql = f"IFNULL({field.type(params)} = 'text' AND kiln_like({field.extract(params)}, ?), 0)"
        params.append(value)
        return sql
    if operator is Operator.CONTAINS or operator is Operator.CONTAINS_ANY:
        if field.column is not None:
            return "0"
        every = 1 if operator is Operator.CONTAINS else 0
        sql = (
            f"IFNULL({field.type(params)} = 'array'"
            f" AND kiln_contains({field.extract(params)}, ?, {every}), 0)"
        )
        params.append(orjson.dumps(_as_list(value)).decode())
        return sql
    if total_order:
        return f"IFNULL({_compare_total(field, value, operator, params)}, 0)"
    return f"IFNULL({_compare_class(field, value, operator, params)}, 0)"


def compile_where(
    filters: Sequence[Filter],
    pagination_rules: Sequence[Sequence[Filter]],
    params: Params,
) -> str:
    """The conditions after the collection's, each starting with `` AND``."""
    sql = "".join(f" AND {compile_filter(f, params)}" for f in filters)
    if pagination_rules:
        rules = [
            " AND ".join(compile_filter(f, params, total_order=True) for f in rule) or "1"
            for rule in pagination_rules
        ]
        sql += " AND ((" + ") OR (".join(rules) + "))"
    return sql


def compile_order(sorting: Sequence[Sort], params: Params) -> str:
    if not sorting:
        return ""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        field = _Field(sort.field)
        if field.column is not None:
            terms.append(f"{field.column} {direction}")
        else:
            terms.append(f"{_RANK.format(t=field.type(params))} {direction}")
            terms.append(f"{field.extract(params)} {direction}")
    return " ORDER BY " + ", ".join(terms)


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


class SQLiteStorage(StorageBase):
    """Storage in a SQLite database.

    Settings (read by :func:`kiln.storage.load_storage`): ``storage.url``
    (the file, default ``kiln.sqlite``; ``:memory:``), and
    ``storage.busy_timeout_seconds``.

    :param database: a :class:`~kiln._sqlite.SQLiteDatabase`, or a path
        (then the process-wide shared database for that path).
    """

    def __init__(self, database: SQLiteDatabase | str = "kiln.sqlite") -> None:
        if isinstance(database, str):
            database = SQLiteDatabase.shared(database)
        self.database = database

    # -- lifecycle -----------------------------------------------------

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        return self.database.install_schema("storage", SCHEMA_VERSION, _SCHEMA, dry_run=dry_run)

    def flush(self) -> None:
        with self.database.transaction() as conn:
            self.database.begin_write(conn)
            conn.execute("DELETE FROM records")
            conn.execute("DELETE FROM timestamps")

    def heartbeat(self) -> bool:
        try:
            with self.database.transaction() as conn:
                conn.execute("SELECT 1 FROM timestamps LIMIT 1").fetchall()
        except Exception:
            return False
        return True

    def close(self) -> None:
        self.database.close()

    def transaction(self) -> Any:
        return self.database.transaction()

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
