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

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from kiln._postgresql import SCHEMA_LOCK, PostgreSQLDatabase, database_for, replicas_for
from kiln._sql import SQLBackend
from kiln.exceptions import BackendError
from kiln.migrations import Migration, folder, load_migrations
from kiln.storage import (
    ABSENT,
    LIVE,
    AppliedWrites,
    Filter,
    Index,
    Operator,
    Record,
    RecordNotFoundError,
    Sort,
    Write,
    WriteConflict,
    check_writes,
)
from kiln.storage._postgresql_sql import (
    Params,
    compile_filter,
    compile_order,
    compile_where,
    dump_json,
    sql_literal,
    typed_expression,
)
from kiln.storage._python_filters import MISSING, get_path

if TYPE_CHECKING:
    pass

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

# -- the flush: one statement per write ----------------------------------------
#
# Each statement bumps the collection's timestamp row (the collection's lock,
# held to the commit: writers of a collection take turns, so timestamps follow
# commit order), writes the record only if it is as the unit of work read it
# (a compare-and-swap PostgreSQL re-checks on the latest row version), and ends
# with kiln_expect(), which aborts the transaction when nothing was written.
# ``floor`` is the record's expected last_modified (NULL: no live record).

#: The collection's new timestamp (and its lock): ``forced`` when later than
#: the record's (or, creating, than the collection's), else ``max(now, current + 1)``.
_STAMP = (
    "WITH stamp AS ("  # noqa: S608
    "INSERT INTO timestamps AS t (resource_name, parent_id, last_modified)"
    " VALUES (%(resource)s, %(parent)s,"
    " CASE WHEN %(forced)s::bigint > COALESCE(%(floor)s::bigint, 0)"
    f" THEN %(forced)s::bigint ELSE {_NOW_MS} END)"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE SET last_modified ="
    " CASE WHEN %(forced)s::bigint > COALESCE(%(floor)s::bigint, t.last_modified)"
    " THEN GREATEST(t.last_modified, %(forced)s::bigint)"
    f" ELSE GREATEST({_NOW_MS}, t.last_modified + 1) END"
    " RETURNING t.last_modified AS collection)"
)
#: The record's timestamp: ``forced`` when it was kept, else the collection's.
_RECORD_TIMESTAMP = (
    "CASE WHEN %(forced)s::bigint > %(floor)s::bigint THEN %(forced)s::bigint"
    " ELSE stamp.collection END"
)
_EXPECT = " SELECT kiln_expect(count(*) = 1, %(index)s), max(last_modified) FROM written"
_THE_RECORD = (
    "records.resource_name = %(resource)s AND records.parent_id = %(parent)s"
    " AND records.id = %(id)s AND NOT records.deleted"
    " AND (%(floor)s::bigint IS NULL OR records.last_modified = %(floor)s)"
)
#: A create (over nothing, or a tombstone).
_CREATE = (
    f"{_STAMP}, written AS ("  # noqa: S608
    "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    f" SELECT %(resource)s, %(parent)s, %(id)s, {_RECORD_TIMESTAMP}, false, %(data)s::jsonb"
    " FROM stamp{unique}"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = false, data = excluded.data"
    " WHERE records.deleted RETURNING records.last_modified)"
    f"{_EXPECT}"
)
_UPDATE = (
    f"{_STAMP}, written AS ("  # noqa: S608
    f"UPDATE records SET last_modified = {_RECORD_TIMESTAMP}, data = %(data)s::jsonb"
    f" FROM stamp WHERE {_THE_RECORD}{{unique}} RETURNING records.last_modified)"
    f"{_EXPECT}"
)
_DELETE = (
    f"{_STAMP}, written AS ("  # noqa: S608
    f"UPDATE records SET last_modified = {_RECORD_TIMESTAMP}, deleted = true,"
    f" data = '{_TOMBSTONE_DATA}'"
    f" FROM stamp WHERE {_THE_RECORD} RETURNING records.last_modified)"
    f"{_EXPECT}"
)
#: Taken before writes with unique fields, so that their checks (later
#: statements, later snapshots) see every commit made before the lock.
_LOCK = (
    "INSERT INTO timestamps AS t (resource_name, parent_id, last_modified)"
    " VALUES (%(resource)s, %(parent)s, 0)"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE SET last_modified = t.last_modified"
)
#: A run of ``n`` creates in one statement (``items``: ``[[id, record], ...]`` as
#: JSON): the collection's timestamp moves by ``n``; the records take the ``n``
#: timestamps up to it, in order.
_CREATES = (
    "WITH stamp AS ("  # noqa: S608
    "INSERT INTO timestamps AS t (resource_name, parent_id, last_modified)"
    f" VALUES (%(resource)s, %(parent)s, {_NOW_MS} + %(n)s - 1)"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE SET last_modified ="
    f" GREATEST({_NOW_MS} + %(n)s - 1, t.last_modified + %(n)s)"
    " RETURNING t.last_modified - %(n)s + 1 AS first), written AS ("
    "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " SELECT %(resource)s, %(parent)s, w.item ->> 0, stamp.first + w.position - 1, false,"
    " w.item -> 1 FROM stamp, jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY"
    " AS w(item, position)"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = false, data = excluded.data"
    " WHERE records.deleted RETURNING records.id, records.last_modified)"
    # The index of the first create that wrote nothing, for the conflict.
    " SELECT kiln_expect(count(*) = %(n)s, COALESCE((SELECT (%(indices)s::int[])[w.position]"
    " FROM jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY AS w(item, position)"
    " WHERE w.item ->> 0 NOT IN (SELECT id FROM written) ORDER BY w.position LIMIT 1), 0)),"
    " array_agg(id), array_agg(last_modified) FROM written"
)
_META = ("id", "last_modified")
#: SQLSTATE of kiln_expect's error (migration 0002).
WRITE_CONFLICT = "KL409"


def list_query(
    resource_name: str,
    parent_id: str,
    *,
    filters: Sequence[Filter] = (),
    sorting: Sequence[Sort] = (),
    pagination_rules: Sequence[Sequence[Filter]] = (),
    limit: int | None = None,
    include_deleted: bool = False,
    typed: Mapping[str, str] | None = None,
) -> tuple[str, Params]:
    """The statement :meth:`PostgreSQLStorage.list_all` runs, and its parameters.

    ``typed``: the fields of the resource's indexes and their types. The
    resource's name is then written in the SQL text, so that the plan of the
    prepared statement can use the resource's (partial) indexes.
    """
    params = Params(resource=resource_name, parent=parent_id)
    live = "" if include_deleted else " AND NOT deleted"
    where = compile_where(filters, pagination_rules, params, typed)
    order = compile_order(sorting, params, typed)
    bound = params.bind(None if limit is None else max(limit, 0))
    collection = (
        f"resource_name = {sql_literal(resource_name)} AND parent_id = %(parent)s"
        if typed
        else _IN_COLLECTION
    )
    sql = (
        "SELECT id, last_modified, data FROM records"  # noqa: S608
        f" WHERE {collection}{live}{where}{order} LIMIT {bound}"
    )
    return sql, params


def index_statement(index: Index) -> str:
    """The ``CREATE INDEX`` of ``index``: partial (its resource's live records),
    on ``parent_id``, its fields as :func:`typed_expression` reads them, then
    ``last_modified DESC, id`` (the end of every sort)."""
    columns = ", ".join(
        [
            "parent_id",
            *(
                f"{typed_expression(f.field, f.type)} {'DESC' if f.direction < 0 else 'ASC'}"
                for f in index.fields
            ),
            "last_modified DESC",
            "id",
        ]
    )
    return (
        f"CREATE INDEX IF NOT EXISTS {index.name} ON records ({columns})"
        f" WHERE resource_name = {sql_literal(index.resource_name)} AND NOT deleted"
    )


# -- the backend ---------------------------------------------------------------


def _record(object_id: str, last_modified: int, data: Record) -> Record:
    data["id"] = object_id
    data["last_modified"] = last_modified
    return data


def _storable(*texts: str) -> bool:
    return not any("\x00" in text for text in texts)


#: The live records below ancestors (:meth:`PostgreSQLStorage.list_descendants`).
_DESCENDANTS = """
WITH RECURSIVE names(name) AS (
    SELECT min(resource_name) FROM records
  UNION ALL
    SELECT (SELECT min(resource_name) FROM records WHERE resource_name > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT DISTINCT r.resource_name, r.parent_id, r.id
FROM unnest(ARRAY(SELECT name FROM names WHERE name IS NOT NULL)) AS n(name),
    unnest(%(ancestors)s::text[]) AS a(ancestor),
    LATERAL (
        SELECT resource_name, parent_id, id FROM records
        WHERE resource_name = n.name
            AND parent_id >= a.ancestor AND parent_id < a.ancestor || '0'
            AND (parent_id = a.ancestor OR starts_with(parent_id, a.ancestor || '/'))
            AND NOT deleted
        OFFSET 0
    ) AS r
ORDER BY 1, 2, 3
"""


class PostgreSQLStorage(SQLBackend[PostgreSQLDatabase], AppliedWrites):
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
        self._indexes: tuple[Index, ...] = ()
        #: Per resource, the fields of its indexes and their types.
        self._typed: dict[str, dict[str, str]] = {}

    def declare_indexes(self, indexes: Sequence[Index]) -> None:
        """Create ``indexes`` with the schema (:meth:`initialize_schema`), and
        compile lists on their fields the way the indexes read them."""
        self._indexes = tuple(indexes)
        typed: dict[str, dict[str, str]] = {}
        for index in indexes:
            for field in index.fields:
                typed.setdefault(index.resource_name, {})[field.field] = field.type
        self._typed = typed

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
        steps = db.install_schema("storage", migrations(icu), dry_run=dry_run)
        return steps + self._install_indexes(dry_run=dry_run)

    def _install_indexes(self, *, dry_run: bool) -> list[str]:
        """Create the declared indexes that do not exist yet; describe each."""
        if not self._indexes:
            return []
        db = self.database
        with db.transaction() as conn:
            existing = {
                row[0]
                for row in db.execute(
                    conn,
                    "SELECT indexname FROM pg_indexes"
                    " WHERE schemaname = current_schema() AND tablename = 'records'",
                ).fetchall()
            }
        missing = [index for index in self._indexes if index.name not in existing]
        if missing and not dry_run:
            # Taken in turns by the processes starting at once, as migrations are.
            with db.unwatched(), db.transaction() as conn:
                db.begin_write(conn)
                db.pipeline(
                    conn,
                    ("SET LOCAL statement_timeout = 0", None),
                    ("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
                    *((index_statement(index), None) for index in missing),
                )
        return [f"create index {index.name}" for index in missing]

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

    # -- units of work: the flush ------------------------------------

    def apply(self, writes: Sequence[Write], *, commit: bool = False) -> list[int]:
        """The flush: one statement per write, all in one round trip (with the
        permission backend's deferred writes before them, and the ``COMMIT``
        after them when ``commit``); see the module docstring."""
        if not writes:
            return []
        check_writes(writes)
        statements: list[tuple[str, dict[str, Any]]] = []
        positions: list[int] = []  # where each write's result is, among the statements
        # Collections in one order for every flush: two flushes never wait on
        # each other's locks in a circle.
        order = sorted(
            range(len(writes)), key=lambda i: (writes[i].resource_name, writes[i].parent_id)
        )
        locked: set[tuple[str, str]] = set()
        #: Each statement's writes, when it makes several (a run of plain creates).
        groups: dict[int, list[int]] = {}
        for index in order:
            write = writes[index]
            if not _storable(write.resource_name, write.parent_id, write.object_id):
                if write.expected == ABSENT and write.record is not None:
                    self._refuse_unstorable()
                raise WriteConflict(index)  # no stored record can be the one expected
            collection = (write.resource_name, write.parent_id)
            if write.unique_fields and collection not in locked:
                locked.add(collection)
                keys = {"resource": write.resource_name, "parent": write.parent_id}
                statements.append((_LOCK, keys))
            previous = groups.get(len(statements) - 1)
            if _plain_create(write) and previous is not None and _same_run(writes, previous, index):
                previous.append(index)
                positions.append(len(statements) - 1)
                continue
            positions.append(len(statements))
            statements.append(_write_statement(write, index))
            if _plain_create(write):
                groups[len(statements) - 1] = [index]
        for position, members in groups.items():
            if len(members) > 1:
                statements[position] = _creates_statement([writes[i] for i in members], members)
        import psycopg

        db = self.database
        with db.transaction() as conn:
            try:
                if commit:
                    cursors = db.commit_with(conn, *statements)
                else:
                    db.begin_write(conn)
                    cursors = db.pipeline(conn, *statements)
            except psycopg.Error as exc:
                if exc.sqlstate == WRITE_CONFLICT:
                    raise WriteConflict(int(exc.diag.message_detail or 0)) from exc
                if isinstance(exc, psycopg.errors.UntranslatableCharacter):
                    raise BackendError(
                        "PostgreSQL cannot store the character U+0000 (\\u0000) in a JSON "
                        "string; remove it from the record.",
                        original=exc,
                    ) from exc
                raise
            timestamps = [0] * len(writes)
            rows = {position: cursors[position].fetchone() for position in set(positions)}
            for index, position in zip(order, positions, strict=True):
                row = rows[position]
                assert row is not None
                members = groups.get(position, [])
                if len(members) > 1:
                    row = (row[0], row[2][row[1].index(writes[index].object_id)])
                timestamps[index] = int(row[1])
        return timestamps

    def _conflict_ends_unit(self) -> bool:
        # kiln_expect aborted the transaction: a unit of work around it cannot go on.
        return self.database.in_unit_of_work()

    @staticmethod
    def _refuse_unstorable() -> None:
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

    # -- single records (create, update, delete: AppliedWrites) --------

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

    def get_records(self, keys: Sequence[tuple[str, str, str]]) -> list[Record | None]:
        """All of them in one statement."""
        if not keys:
            return []
        stored = [key for key in keys if _storable(*key)]
        db = self.database.reader()
        rows: list[tuple[Any, ...]] = []
        if stored:
            with db.transaction() as conn:
                rows = db.execute(
                    conn,
                    "SELECT r.resource_name, r.parent_id, r.id, r.last_modified, r.deleted, r.data"
                    " FROM unnest(%(resources)s::text[], %(parents)s::text[], %(ids)s::text[])"
                    " AS wanted(resource_name, parent_id, id) JOIN records AS r USING"
                    " (resource_name, parent_id, id)",
                    {
                        "resources": [key[0] for key in stored],
                        "parents": [key[1] for key in stored],
                        "ids": [key[2] for key in stored],
                    },
                ).fetchall()
        by_key = {(row[0], row[1], row[2]): row for row in rows}
        if db is not self.database:
            # A tombstone's timestamp counts: it is the record's latest change.
            for resource_name, parent_id, object_id in stored:
                row = by_key.get((resource_name, parent_id, object_id))
                self.database.require_fresh(resource_name, 0 if row is None else int(row[3]))
        found: list[Record | None] = []
        for key in keys:
            row = by_key.get(key)
            found.append(None if row is None or row[4] else _record(key[2], row[3], row[5]))
        return found

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
            typed=self._typed.get(resource_name),
        )
        db = self.database.reader()
        with db.transaction() as conn:
            rows = db.execute(conn, sql, params.values).fetchall()
        return [_record(*row) for row in rows]

    def list_page(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        pagination_rules: Sequence[Sequence[Filter]] = (),
        limit: int | None = None,
        include_deleted: bool = False,
    ) -> tuple[list[Record], int]:
        """The page and the collection timestamp in one statement (one snapshot)."""
        if not _storable(resource_name, parent_id):
            return [], 0
        sql, params = list_query(
            resource_name,
            parent_id,
            filters=filters,
            sorting=sorting,
            pagination_rules=pagination_rules,
            limit=limit,
            include_deleted=include_deleted,
            typed=self._typed.get(resource_name),
        )
        page = (
            f"SELECT ({_SELECT_TIMESTAMP}), p.id, p.last_modified, p.data"  # noqa: S608
            f" FROM (SELECT 1) AS one LEFT JOIN LATERAL ({sql}) AS p ON true"
        )
        db = self.database.reader()
        with db.transaction() as conn:
            rows = db.execute(conn, page, params.values).fetchall()
        timestamp = int(rows[0][0] or 0)
        if db is not self.database:
            self.database.require_fresh(resource_name, timestamp)
        return [_record(*row[1:]) for row in rows if row[1] is not None], timestamp

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        params = Params(resource=resource_name, parent=parent_id)
        where = compile_where(filters, (), params, self._typed.get(resource_name))
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
        return super().delete_all(
            resource_name, parent_id, filters=filters, sorting=sorting, limit=limit
        )

    def list_descendants(self, parent_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """One statement, served by the primary key whatever the table's size:
        the resource names are found by skipping through the key (one probe
        each), then, for each name and ancestor, the key's range of parent ids
        from the ancestor up to the ancestor followed by ``0`` (``/`` and
        ``0`` are neighbours in the ``C`` collation), checked again for the
        ancestor itself or the ancestor and ``/``.

        The names go through ``ARRAY(...)`` so that the planner estimates ten,
        not a hundred: its estimate of the statement would otherwise cross
        ``jit_above_cost`` and compile for 50 ms a statement that takes a few.
        """
        ancestors = [ancestor for ancestor in parent_ids if ancestor and _storable(ancestor)]
        if not ancestors:
            return []
        db = self.database
        with db.transaction() as conn:
            rows = db.execute(conn, _DESCENDANTS, {"ancestors": ancestors}).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

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


def _plain_create(write: Write) -> bool:
    """Whether ``write`` creates with nothing to check but the id, and no forced timestamp."""
    return (
        write.record is not None
        and write.expected == ABSENT
        and not write.unique_fields
        and write.forced is None
    )


def _same_run(writes: Sequence[Write], run: list[int], index: int) -> bool:
    first, write = writes[run[0]], writes[index]
    return (first.resource_name, first.parent_id) == (write.resource_name, write.parent_id) and (
        write.object_id not in {writes[i].object_id for i in run}
    )


def _creates_statement(writes: list[Write], indices: list[int]) -> tuple[str, dict[str, Any]]:
    """One statement making a run of plain creates of one collection (a batch's),
    their timestamps following each other; ``indices``: their places in the flush."""
    first = writes[0]
    return _CREATES, {
        "resource": first.resource_name,
        "parent": first.parent_id,
        "n": len(writes),
        # One JSON document: [[id, record], ...] (psycopg escapes array items one by one).
        "items": dump_json(
            [
                [write.object_id, {k: v for k, v in (write.record or {}).items() if k not in _META}]
                for write in writes
            ]
        ),
        "indices": indices,
    }


def _write_statement(write: Write, index: int) -> tuple[str, dict[str, Any]]:
    """The flush statement of ``write``, the ``index``-th of its flush."""
    params = Params(
        resource=write.resource_name,
        parent=write.parent_id,
        id=write.object_id,
        floor=None if write.expected in (ABSENT, LIVE) else write.expected,
        forced=write.forced,
        index=index,
    )
    if write.record is None:
        return _DELETE, params.values
    params.values["data"] = dump_json(
        {k: v for k, v in write.record.items() if k not in ("id", "last_modified")}
    )
    unique = _unique_check(write, params)
    sql = _CREATE if write.expected == ABSENT else _UPDATE
    return sql.format(unique=unique), params.values


def _unique_check(write: Write, params: Params) -> str:
    """`` WHERE``/`` AND`` no other live record holds one of the write's unique values."""
    assert write.record is not None
    held = [
        compile_filter(Filter(name, value, Operator.EQ), params)
        for name in write.unique_fields
        if (value := get_path(write.record, name)) is not MISSING and value is not None
    ]
    if not held:
        return ""
    joiner = " WHERE" if write.expected == ABSENT else " AND"
    return (
        f"{joiner} NOT EXISTS (SELECT 1 FROM records AS held"  # noqa: S608
        " WHERE held.resource_name = %(resource)s AND held.parent_id = %(parent)s"
        f" AND NOT held.deleted AND held.id <> %(id)s AND ({' OR '.join(held)}))"
    )


def load(config: Any) -> PostgreSQLStorage:
    """The backend of ``storage.backend = "postgresql"``.

    Reads ``storage.url``, the pool settings and the read replicas' (see
    :class:`PostgreSQLStorage`).
    """
    database = database_for(config, config.setting("storage.url"))
    replicas_for(config, database)
    return PostgreSQLStorage(database)
