"""Storage in PostgreSQL (psycopg 3, a pool per process): the production backend.

Layout (schema version 1, ``kiln/migrations/postgresql/storage``; see
``docs/storage.md`` for the reasons)::

    records(resource_name, parent_id, id, last_modified, deleted, data JSONB)
        PRIMARY KEY (resource_name, parent_id, id)         get, ORDER BY id
        INDEX (resource_name, parent_id, last_modified)    _since, ORDER BY last_modified
    timestamps(resource_name, parent_id, last_modified)    PRIMARY KEY (resource_name, parent_id)
    kiln_casefold(text)                                     LIKE, case-insensitively
    schema_versions(component, version)

Text columns use the ``"C"`` collation: ids compare by code point (UTF-8
bytes), as the contract wants, and the B-trees compare bytes. ``data`` is
the record without ``id`` and ``last_modified`` (they are columns); a
tombstone is the same row with ``deleted`` and ``data = {"deleted": true}``.

Writes. Every write first locks its collection's ``timestamps`` row
(``SELECT ... FOR UPDATE``), then reads what it checks (the record for
``if_match`` and unicity, which sees every commit made before the lock was
granted), then writes the record and the new collection timestamp
``max(now, current + 1)`` in one statement. The lock is held until the
unit of work ends, so the writers of one collection take turns: timestamps
are unique and increase in commit order (a ``_since`` follower never misses
a record), ``if_match`` is a true compare-and-swap, and two creates of one
id cannot both succeed -- without a single unique-violation or
serialization error to retry. A contract error (``UnicityError``, ...) is
raised before anything is written. Round trips of a write: the ``BEGIN``,
lock and read share one pipeline, the write is one statement, then the
commit.

Reads. One statement each; filters and sorts compile to SQL
(:mod:`kiln.storage._postgresql_sql`) over ``data #> path`` with the path
bound as a ``text[]`` parameter, and every value is bound too: the SQL text
depends only on the *shape* of a query (operators and value types), so
psycopg prepares it once per connection. Values of different JSON types
order as the contract says (a rank, then numbers as ``numeric``, strings in
``"C"`` collation, arrays and objects by their JSON text). Keyset pages on
``last_modified`` or ``id`` also get the bound all their rules imply
(:func:`~kiln.storage._postgresql_sql.implied_bound`), so the index scan
starts at the page. Lists never count.

Read replicas. With ``storage.read_urls``, the reads of a request the
views route to a replica (:meth:`PostgreSQLStorage.route_request`) --
:meth:`~PostgreSQLStorage.get`, :meth:`~PostgreSQLStorage.list_all`,
:meth:`~PostgreSQLStorage.count_all`,
:meth:`~PostgreSQLStorage.collection_timestamp` and
:meth:`~PostgreSQLStorage.snapshot` -- run the same SQL on the replica
(:meth:`~kiln._postgresql.PostgreSQLDatabase.reader`); a collection or
record timestamp older than what the client has seen sends the request to
the primary (:meth:`~kiln._postgresql.PostgreSQLDatabase.require_fresh`).
Writes, and reads inside a unit of work that writes, use the primary.

PostgreSQL cannot store the character U+0000 in ``jsonb`` or ``text``:
creating or updating a record holding it raises :class:`BackendError`;
filters with it match what the contract says (nothing stored holds it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from kiln._postgresql import PostgreSQLDatabase, database_for, replicas_for
from kiln._sql import SQLBackend
from kiln.exceptions import BackendError
from kiln.migrations import Migration, folder, load_migrations
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
from kiln.storage._postgresql_sql import (
    Params,
    compile_filter,
    compile_order,
    compile_where,
    dump_json,
)
from kiln.storage._python_filters import MISSING, get_path

if TYPE_CHECKING:
    from psycopg import Connection, Cursor

__all__ = ["PostgreSQLStorage", "load"]

T = TypeVar("T")

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module and :mod:`kiln.storage._postgresql_sql`, and
# ``%(name)s`` placeholders; every value, and every user-given field name (as
# a JSON path), is a bound parameter.

#: ``str.casefold`` as well as PostgreSQL can: ICU's full case mappings
#: (``ß`` and ``ẞ`` fold to ``ss``, ``İ`` to ``i̇``, a final sigma to a sigma).
CASEFOLD_ICU = (
    "CREATE OR REPLACE FUNCTION kiln_casefold(value text) RETURNS text"
    " LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    " AS $$ SELECT replace(lower(upper(lower(value COLLATE \"und-x-icu\"))), 'ς', 'σ') $$"  # noqa: RUF001
)
#: Without ICU, the database collation's ``lower()``.
CASEFOLD_PLAIN = (
    "CREATE OR REPLACE FUNCTION kiln_casefold(value text) RETURNS text"
    " LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT lower(value) $$"
)


def migrations(icu: bool) -> tuple[Migration, ...]:
    """The numbered migrations of the storage schema (``kiln/migrations/postgresql/
    storage``); version 1 first creates ``kiln_casefold`` for the server
    (``icu``: it has ICU collations)."""
    casefold = ("create function kiln_casefold", CASEFOLD_ICU if icu else CASEFOLD_PLAIN)
    return load_migrations(folder("postgresql", "storage"), {1: [casefold]})


_TOMBSTONE_DATA = '{"deleted": true}'
_IN_COLLECTION = "resource_name = %(resource)s AND parent_id = %(parent)s"
_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

_SELECT_ONE = (
    "SELECT last_modified, deleted, data FROM records"  # noqa: S608
    f" WHERE {_IN_COLLECTION} AND id = %(id)s"
)
_SELECT_TIMESTAMP = f"SELECT last_modified FROM timestamps WHERE {_IN_COLLECTION}"  # noqa: S608
_LOCK = (
    f"SELECT last_modified, {_NOW_MS} FROM timestamps"  # noqa: S608
    f" WHERE {_IN_COLLECTION} FOR UPDATE"
)
_ADD_TIMESTAMP = (
    "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
    " VALUES (%(resource)s, %(parent)s, 0) ON CONFLICT DO NOTHING"
)
_SET_TIMESTAMP = (
    "UPDATE timestamps SET last_modified = %(collection)s"  # noqa: S608
    f" WHERE {_IN_COLLECTION}"
)
_STORE = (
    f"WITH stamp AS ({_SET_TIMESTAMP})"  # noqa: S608
    " INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " VALUES (%(resource)s, %(parent)s, %(id)s, %(timestamp)s, false, %(data)s::jsonb)"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = false, data = excluded.data"
    " RETURNING data"
)
_BURY = (
    f"WITH stamp AS ({_SET_TIMESTAMP})"  # noqa: S608
    f" UPDATE records SET deleted = true, last_modified = buried.timestamp,"
    f" data = '{_TOMBSTONE_DATA}'"
    " FROM unnest(%(ids)s::text[], %(timestamps)s::bigint[]) AS buried(id, timestamp)"
    f" WHERE {_IN_COLLECTION} AND records.id = buried.id"
)


def list_query(
    resource_name: str,
    parent_id: str,
    *,
    filters: Sequence[Filter] = (),
    sorting: Sequence[Sort] = (),
    pagination_rules: Sequence[Sequence[Filter]] = (),
    limit: int | None = None,
    include_deleted: bool = False,
) -> tuple[str, Params]:
    """The statement :meth:`PostgreSQLStorage.list_all` runs, and its parameters."""
    params = Params(resource=resource_name, parent=parent_id)
    live = "" if include_deleted else " AND NOT deleted"
    where = compile_where(filters, pagination_rules, params)
    order = compile_order(sorting, params)
    bound = params.bind(None if limit is None else max(limit, 0))
    sql = (
        "SELECT id, last_modified, data FROM records"  # noqa: S608
        f" WHERE {_IN_COLLECTION}{live}{where}{order} LIMIT {bound}"
    )
    return sql, params


# -- the backend ---------------------------------------------------------------


def _forced(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _next_timestamp(current: int, now: int, forced: int | None, floor: int | None) -> int:
    """The timestamp of the next change; ``forced`` is kept when above ``floor``
    (the record's, else the collection's)."""
    if forced is not None and forced > (current if floor is None else floor):
        return forced
    return max(now, current + 1)


def _record(object_id: str, last_modified: int, data: Record) -> Record:
    data["id"] = object_id
    data["last_modified"] = last_modified
    return data


def _storable(*texts: str) -> bool:
    return not any("\x00" in text for text in texts)


class PostgreSQLStorage(SQLBackend[PostgreSQLDatabase], StorageBase):
    """Storage in a PostgreSQL database.

    Settings (read by :func:`kiln.storage.load_storage`): ``storage.url``
    (``postgresql://user:password@host:5432/dbname``), ``storage.pool_size``,
    ``storage.pool_timeout_seconds``, ``storage.connect_timeout_seconds``,
    ``storage.statement_timeout_ms``; for read replicas ``storage.read_urls``,
    ``storage.replica_max_lag_seconds``, ``storage.replica_check_seconds``,
    ``storage.replica_retry_seconds``, ``storage.read_your_writes_seconds``.

    :param database: a :class:`~kiln._postgresql.PostgreSQLDatabase`, or a URL
        (then the process-wide shared database for that URL).
    """

    component = "storage"
    heartbeat_table = "timestamps"

    def __init__(self, database: PostgreSQLDatabase | str) -> None:
        if isinstance(database, str):
            database = PostgreSQLDatabase.shared(database)
        self.database = database

    # -- lifecycle (heartbeat, close, transaction: SQLBackend) ----------

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        db = self.database
        with db.transaction() as conn:
            encoding, icu = db.execute(
                conn,
                "SELECT current_setting('server_encoding'),"
                " EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')",
            ).fetchone() or ("", False)
        if encoding != "UTF8":
            raise BackendError(
                f"PostgreSQL database {db.name} uses the encoding {encoding}; kiln stores "
                "JSON and needs UTF8. Create the database with ENCODING 'UTF8'."
            )
        return db.install_schema("storage", migrations(icu), dry_run=dry_run)

    def flush(self) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            db.pipeline(conn, ("DELETE FROM records", None), ("DELETE FROM timestamps", None))

    def snapshot(self) -> Any:
        return self.database.reader().snapshot()

    def route_request(
        self,
        work: Callable[[], T],
        *,
        method: str,
        if_match: bool,
        resource_name: str,
        user_id: str | None,
        seen: int | None,
    ) -> T:
        """Run a request's unit of work ``work``, its reads on a read replica
        when it may (:meth:`kiln._postgresql.PostgreSQLDatabase.route`).

        ``method`` is the request's, ``if_match`` whether it has ``If-Match``,
        ``user_id`` the caller's (None: anonymous), ``seen`` the newest
        timestamp of ``resource_name`` the client sent (``If-None-Match``,
        ``_since``, ``_before``).
        """
        return self.database.route(
            work,
            method=method,
            if_match=if_match,
            resource_name=resource_name,
            user_id=user_id,
            seen=seen,
        )

    # -- helpers -------------------------------------------------------

    def _lock(
        self,
        conn: Connection[Any],
        resource_name: str,
        parent_id: str,
        then: tuple[str, Params],
    ) -> tuple[int, int, Cursor[Any]]:
        """Lock the collection; return its timestamp, the time, and the cursor of
        ``then`` (a read run right after the lock was granted)."""
        db = self.database
        db.begin_write(conn)
        keys = {"resource": resource_name, "parent": parent_id}
        lock, after = db.pipeline(conn, (_LOCK, keys), (then[0], then[1].values))
        row = lock.fetchone()
        if row is None:
            _, lock, after = db.pipeline(
                conn, (_ADD_TIMESTAMP, keys), (_LOCK, keys), (then[0], then[1].values)
            )
            row = lock.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), after

    def _check_unique(
        self,
        conn: Connection[Any],
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
            params = Params(resource=resource_name, parent=parent_id, id=object_id)
            condition = compile_filter(Filter(field, value, Operator.EQ), params)
            row = self.database.execute(
                conn,
                "SELECT id, last_modified, data FROM records"  # noqa: S608
                f" WHERE {_IN_COLLECTION} AND NOT deleted AND id <> %(id)s AND {condition}"
                " LIMIT 1",
                params.values,
            ).fetchone()
            if row is not None:
                raise UnicityError(field, _record(*row))

    @staticmethod
    def _data(record: Record) -> str:
        return dump_json({k: v for k, v in record.items() if k not in ("id", "last_modified")})

    def _store(
        self,
        conn: Connection[Any],
        keys: dict[str, Any],
        data: str,
        timestamp: int,
        collection: int,
    ) -> Record:
        import psycopg

        try:
            row = self.database.execute(
                conn,
                _STORE,
                {**keys, "data": data, "timestamp": timestamp, "collection": collection},
            ).fetchone()
        except psycopg.errors.UntranslatableCharacter as exc:
            raise BackendError(
                "PostgreSQL cannot store the character U+0000 (\\u0000) in a JSON string; "
                "remove it from the record.",
                original=exc,
            ) from exc
        assert row is not None
        return _record(keys["id"], timestamp, row[0])

    @staticmethod
    def _refuse_unstorable(*texts: str) -> None:
        if not _storable(*texts):
            raise BackendError(
                "PostgreSQL cannot store the character U+0000 in a resource name, parent "
                "id or record id."
            )

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        db = self.database.reader()
        with db.transaction() as conn:
            row = db.execute(
                conn, _SELECT_TIMESTAMP, {"resource": resource_name, "parent": parent_id}
            ).fetchone()
        timestamp = int(row[0]) if row is not None else 0
        if db is not self.database:
            self.database.require_fresh(resource_name, timestamp)
        return timestamp

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
        self._refuse_unstorable(resource_name, parent_id, object_id)
        data = self._data(record)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is not None and not row[1]:
                raise UnicityError("id", _record(object_id, row[0], row[2]))
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            timestamp = _next_timestamp(current, now, _forced(record.get("last_modified")), None)
            return self._store(conn, keys, data, timestamp, max(current, timestamp))

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        if not _storable(resource_name, parent_id, object_id):
            raise RecordNotFoundError(object_id)
        db = self.database.reader()
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with db.transaction() as conn:
            row = db.execute(conn, _SELECT_ONE, keys).fetchone()
        if db is not self.database:
            # A tombstone's timestamp counts: it is the record's latest change.
            self.database.require_fresh(resource_name, 0 if row is None else int(row[0]))
        if row is None or row[1]:
            raise RecordNotFoundError(object_id)
        return _record(object_id, row[0], row[2])

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
        self._refuse_unstorable(resource_name, parent_id, object_id)
        data = self._data(record)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is not None and row[1]:
                row = None  # a tombstone: no live record
            if if_match is not None and (row is None or row[0] != if_match):
                raise PreconditionFailed(
                    None if row is None else _record(object_id, row[0], row[2])
                )
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            forced = _forced(record.get("last_modified"))
            timestamp = _next_timestamp(current, now, forced, None if row is None else row[0])
            return self._store(conn, keys, data, timestamp, max(current, timestamp))

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        if not _storable(resource_name, parent_id, object_id):
            if if_match is not None:
                raise PreconditionFailed(None)
            raise RecordNotFoundError(object_id)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is None or row[1]:
                if if_match is not None:
                    raise PreconditionFailed(None)
                raise RecordNotFoundError(object_id)
            if if_match is not None and row[0] != if_match:
                raise PreconditionFailed(_record(object_id, row[0], row[2]))
            timestamp = _next_timestamp(current, now, _forced(last_modified), row[0])
            self._bury(conn, resource_name, parent_id, [object_id], [timestamp], current)
            return {"id": object_id, "last_modified": timestamp, "deleted": True}

    def _bury(
        self,
        conn: Connection[Any],
        resource_name: str,
        parent_id: str,
        ids: list[str],
        timestamps: list[int],
        current: int,
    ) -> None:
        self.database.execute(
            conn,
            _BURY,
            {
                "resource": resource_name,
                "parent": parent_id,
                "ids": ids,
                "timestamps": timestamps,
                "collection": max(current, *timestamps),
            },
        )

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
        if not _storable(resource_name, parent_id):
            return []
        sql, params = list_query(
            resource_name,
            parent_id,
            filters=filters,
            sorting=sorting,
            pagination_rules=pagination_rules,
            limit=limit,
            include_deleted=include_deleted,
        )
        db = self.database.reader()
        with db.transaction() as conn:
            rows = db.execute(conn, sql, params.values).fetchall()
        return [_record(*row) for row in rows]

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        params = Params(resource=resource_name, parent=parent_id)
        where = compile_where(filters, (), params)
        sql = f"SELECT count(*) FROM records WHERE {_IN_COLLECTION} AND NOT deleted{where}"  # noqa: S608
        db = self.database.reader()
        with db.transaction() as conn:
            row = db.execute(conn, sql, params.values).fetchone()
        return int(row[0]) if row is not None else 0

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        if not _storable(resource_name, parent_id):
            return []
        params = Params(resource=resource_name, parent=parent_id)
        where = compile_where(filters, (), params)
        order = compile_order(sorting, params)
        bound = params.bind(None if limit is None else max(limit, 0))
        sql = (
            "SELECT id FROM records"  # noqa: S608
            f" WHERE {_IN_COLLECTION} AND NOT deleted{where}{order} LIMIT {bound}"
        )
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(conn, resource_name, parent_id, (sql, params))
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            first = max(now, current + 1)
            timestamps = list(range(first, first + len(ids)))
            self._bury(conn, resource_name, parent_id, ids, timestamps, current)
        return [
            {"id": object_id, "last_modified": timestamp, "deleted": True}
            for object_id, timestamp in zip(ids, timestamps, strict=True)
        ]

    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        sql = f"DELETE FROM records WHERE {_IN_COLLECTION} AND deleted"  # noqa: S608
        params: dict[str, Any] = {"resource": resource_name, "parent": parent_id}
        if before is not None:
            sql += " AND last_modified < %(before)s"
            params["before"] = before
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            return db.execute(conn, sql, params).rowcount


def load(config: Any) -> PostgreSQLStorage:
    """The backend of ``storage.backend = "postgresql"``.

    Reads ``storage.url``, the pool settings and the read replicas' (see
    :class:`PostgreSQLStorage`).
    """
    database = database_for(config, config.setting("storage.url"))
    replicas_for(config, database)
    return PostgreSQLStorage(database)
