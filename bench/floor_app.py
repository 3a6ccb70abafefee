"""The bare floor: a framework-free WSGI app doing kiln's database work, no more.

``bench/resources.py`` runs it under gunicorn beside kiln (``gunicorn
bench.floor_app:application``) to show what the same SQL costs without a
framework. It runs on SQLite (``$FLOOR_DB``, default ``floor.sqlite``) or,
when ``$FLOOR_POSTGRESQL_URL`` is set, on PostgreSQL. Either way it keeps
kiln's guarantees for the operations it serves:

- a record's ``last_modified`` is its collection's timestamp at its change;
  the collection timestamp ``max(now, current + 1)`` is bumped under the
  collection's write lock, held until commit, so timestamps are unique and
  increase in commit order (no "same millisecond" conflict, no missed change
  for a ``_since`` reader);
- ``If-Match`` is a compare-and-swap: the check and the write are atomic;
- the body is validated by the same JSON Schema with the same validator
  (``jsonschema_rs``), JSON in and out with orjson, ``ETag`` and
  ``Last-Modified`` on records and lists;
- a batch of creates is one transaction (all or nothing);
- a list is a keyset page: ``next`` carries the last record's sort key, and
  ``_token`` resumes after it.

SQLite (the schema of :mod:`kiln.storage.sqlite`): the same tables and index,
a tombstone is ``deleted = 1``; one connection per thread, WAL,
``synchronous = NORMAL``, a busy timeout, autocommit with explicit ``BEGIN``;
every write under ``BEGIN IMMEDIATE`` (the database's write lock) with the
existence / ``If-Match`` check, the timestamp bump and the write inside.

PostgreSQL: the same layout with ``data JSONB``, ``last_modified BIGINT``
(ms) and ``deleted BOOLEAN``; one autocommit psycopg connection per thread
(server-side prepared statements after psycopg's default threshold). The
collection's write lock is its row in ``timestamps``: every write bumps it
with ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` in the same statement
as the record write, so a create, a delete or a batch item is one round trip;
a PATCH is two (read, then a compare-and-swap statement that locks the record
``FOR UPDATE`` where ``last_modified`` is still the one read, bumps the
timestamp and writes). A batch is one transaction whose 25 creates are sent
in one pipeline (psycopg's ``executemany``). Timestamps come from the
server's clock (``clock_timestamp()``), so app servers' clocks do not matter.

It is deliberately naive elsewhere: a list sorts on the raw JSON value
without kiln's type ranks (the bench data has one type per field) and
without an index (every list sorts the matching rows), routing is a string
split, errors are bare, nothing is logged. Authentication is a parse: a
request without an ``Authorization: Basic`` header holding ``user:password``
in base64 answers 401; any such pair is accepted (as kiln's and Kinto's
``basicauth`` accept any pair), and the floor has no permissions.

Routes (``/v1`` prefix, one resource, ``records``, in any
``/buckets/<bucket>/collections/<collection>``: its ``parent_id``, as in
kiln and Kinto; nothing checks that the bucket or collection exists)::

    POST   <collection>/records              create
    GET    <collection>/records?edible=true&_sort=-size&_limit=20[&_token=]  list
    GET    <collection>/records/<id>         get
    PATCH  <collection>/records/<id>         merge top-level keys; If-Match honoured
    DELETE <collection>/records/<id>         tombstone
    POST   /v1/batch                         creates only, one transaction
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import jsonschema_rs
import orjson

#: The record schema of the bench resource (kiln's side imports it too).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "size": {"type": "number"},
        "edible": {"type": "boolean"},
    },
    "required": ["name"],
}

RESOURCE = "record"
PREFIX = "/v1"
#: The bench's bucket and collection: the records' ``parent_id``, and their path.
BUCKET = "bench"
COLLECTION = "items"
PARENT_ID = f"/buckets/{BUCKET}/collections/{COLLECTION}"
RECORDS_PATH = f"{PREFIX}{PARENT_ID}/records"

_validator = jsonschema_rs.validator_for(SCHEMA)


class _Error(Exception):
    def __init__(self, status: str, message: str) -> None:
        self.status = status
        self.message = message


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- SQLite ----------------------------------------------------------------------

SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records ("
    " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL, id TEXT NOT NULL,"
    " last_modified INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
    " data TEXT NOT NULL,"
    " PRIMARY KEY (resource_name, parent_id, id))",
    "CREATE INDEX IF NOT EXISTS records_last_modified"
    " ON records (resource_name, parent_id, last_modified)",
    "CREATE TABLE IF NOT EXISTS timestamps ("
    " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL,"
    " last_modified INTEGER NOT NULL,"
    " PRIMARY KEY (resource_name, parent_id)) WITHOUT ROWID",
)
_SQ_SELECT_ONE = (
    "SELECT last_modified, deleted, data FROM records"
    " WHERE resource_name = ? AND parent_id = ? AND id = ?"
)
_SQ_SELECT_TS = "SELECT last_modified FROM timestamps WHERE resource_name = ? AND parent_id = ?"
_SQ_UPSERT_TS = (
    "INSERT INTO timestamps (resource_name, parent_id, last_modified) VALUES (?, ?, ?)"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE SET last_modified = excluded.last_modified"
)
_SQ_UPSERT_RECORD = (
    "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " VALUES (?, ?, ?, ?, 0, ?)"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = 0, data = excluded.data"
)
_SQ_BURY = (
    "UPDATE records SET deleted = 1, last_modified = ?, data = '{\"deleted\":true}'"
    " WHERE resource_name = ? AND parent_id = ? AND id = ?"
)
_SQ_LIST = (
    "SELECT id, last_modified, data FROM records"
    " WHERE resource_name = ? AND parent_id = ? AND deleted = 0"
    " AND json_type(data, '$.edible') = ?{after}"
    " ORDER BY json_extract(data, '$.size') DESC, last_modified DESC, id ASC LIMIT ?"
)
_SQ_AFTER = (
    " AND (json_extract(data, '$.size') < ?"
    " OR (json_extract(data, '$.size') = ? AND last_modified < ?))"
)


class SQLiteStore:
    """Records in a SQLite file; one connection per thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=5.0,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._schema_lock:
                if not self._schema_ready:
                    with self._write(conn):
                        for statement in SQLITE_SCHEMA:
                            conn.execute(statement)
                    self._schema_ready = True
        return conn

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _next_timestamp(conn: sqlite3.Connection, parent: str) -> int:
        row = conn.execute(_SQ_SELECT_TS, (RESOURCE, parent)).fetchone()
        current = row[0] if row is not None else 0
        timestamp = max(_now_ms(), current + 1)
        conn.execute(_SQ_UPSERT_TS, (RESOURCE, parent, timestamp))
        return timestamp

    def get(self, parent: str, object_id: str) -> tuple[int, dict[str, Any]] | None:
        row = self._connection().execute(_SQ_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
        if row is None or row[1]:
            return None
        return row[0], orjson.loads(row[2])

    def create_many(self, parent: str, owns: list[dict[str, Any]]) -> list[tuple[str, int]]:
        conn = self._connection()
        created = []
        with self._write(conn):
            for own in owns:
                object_id = str(uuid.uuid4())
                row = conn.execute(_SQ_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
                if row is not None and not row[1]:
                    raise _Error("409 Conflict", "id taken")  # a uuid4 collision
                timestamp = self._next_timestamp(conn, parent)
                conn.execute(
                    _SQ_UPSERT_RECORD, (RESOURCE, parent, object_id, timestamp, orjson.dumps(own))
                )
                created.append((object_id, timestamp))
        return created

    def patch(
        self, parent: str, object_id: str, changes: dict[str, Any], if_match: int | None
    ) -> tuple[dict[str, Any], int]:
        conn = self._connection()
        with self._write(conn):
            row = conn.execute(_SQ_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
            if row is None or row[1]:
                raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
            if if_match is not None and row[0] != if_match:
                raise _Error("412 Precondition Failed", "modified meanwhile")
            old = orjson.loads(row[2])
            own = _check({**old, **changes})
            if own == old:
                return own, row[0]
            timestamp = self._next_timestamp(conn, parent)
            conn.execute(
                _SQ_UPSERT_RECORD, (RESOURCE, parent, object_id, timestamp, orjson.dumps(own))
            )
        return own, timestamp

    def delete(self, parent: str, object_id: str, if_match: int | None) -> int:
        conn = self._connection()
        with self._write(conn):
            row = conn.execute(_SQ_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
            if row is None or row[1]:
                raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
            if if_match is not None and row[0] != if_match:
                raise _Error("412 Precondition Failed", "modified meanwhile")
            timestamp = self._next_timestamp(conn, parent)
            conn.execute(_SQ_BURY, (timestamp, RESOURCE, parent, object_id))
        return timestamp

    def list(
        self, parent: str, edible: bool, limit: int, after: tuple[Any, int] | None
    ) -> tuple[int, list[tuple[str, int, dict[str, Any]]]]:
        conn = self._connection()
        row = conn.execute(_SQ_SELECT_TS, (RESOURCE, parent)).fetchone()
        timestamp = row[0] if row is not None else 0
        params: list[Any] = [RESOURCE, parent, "true" if edible else "false"]
        if after is not None:
            params += [after[0], after[0], after[1]]
        rows = conn.execute(
            _SQ_LIST.format(after=_SQ_AFTER if after else ""), [*params, limit]
        ).fetchall()
        return timestamp, [(i, lm, orjson.loads(data)) for i, lm, data in rows]


# -- PostgreSQL ------------------------------------------------------------------

POSTGRESQL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records ("
    ' resource_name TEXT COLLATE "C" NOT NULL, parent_id TEXT COLLATE "C" NOT NULL,'
    ' id TEXT COLLATE "C" NOT NULL, last_modified BIGINT NOT NULL,'
    " deleted BOOLEAN NOT NULL DEFAULT FALSE, data JSONB NOT NULL,"
    " PRIMARY KEY (resource_name, parent_id, id))",
    "CREATE INDEX IF NOT EXISTS records_last_modified"
    " ON records (resource_name, parent_id, last_modified)",
    "CREATE TABLE IF NOT EXISTS timestamps ("
    ' resource_name TEXT COLLATE "C" NOT NULL, parent_id TEXT COLLATE "C" NOT NULL,'
    " last_modified BIGINT NOT NULL, PRIMARY KEY (resource_name, parent_id))",
)
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
#: Bump the collection timestamp (and lock its row until commit) for each row of ``source``.
_PG_BUMP = (
    "INSERT INTO timestamps AS t (resource_name, parent_id, last_modified)"
    f" SELECT %(r)s, %(p)s, {_NOW} FROM {{source}}"
    " ON CONFLICT (resource_name, parent_id) DO UPDATE"
    " SET last_modified = GREATEST(excluded.last_modified, t.last_modified + 1)"
    " RETURNING t.last_modified"
)
_PG_CREATE = (
    f"WITH ts AS ({_PG_BUMP.format(source='(VALUES (1)) AS one')})"
    " INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " SELECT %(r)s, %(p)s, %(id)s, ts.last_modified, FALSE, %(data)s::jsonb FROM ts"
    " RETURNING last_modified"
)
_PG_SELECT_ONE = (
    "SELECT last_modified, data::text FROM records"
    " WHERE resource_name = %s AND parent_id = %s AND id = %s AND NOT deleted"
)
#: The compare-and-swap: nothing happens unless the live record still has ``%(lm)s``.
_PG_LOCK_CURRENT = (
    "SELECT 1 FROM records WHERE resource_name = %(r)s AND parent_id = %(p)s AND id = %(id)s"
    " AND NOT deleted AND (%(lm)s::bigint IS NULL OR last_modified = %(lm)s) FOR UPDATE"
)
_PG_UPDATE = (
    f"WITH old AS ({_PG_LOCK_CURRENT}), ts AS ({_PG_BUMP.format(source='old')})"
    " UPDATE records SET last_modified = ts.last_modified, data = %(data)s::jsonb FROM ts"
    " WHERE resource_name = %(r)s AND parent_id = %(p)s AND id = %(id)s"
    " RETURNING records.last_modified"
)
_PG_BURY = (
    f"WITH old AS ({_PG_LOCK_CURRENT}), ts AS ({_PG_BUMP.format(source='old')})"
    " UPDATE records SET last_modified = ts.last_modified, deleted = TRUE,"
    " data = '{\"deleted\": true}'::jsonb FROM ts"
    " WHERE resource_name = %(r)s AND parent_id = %(p)s AND id = %(id)s"
    " RETURNING records.last_modified"
)
_PG_SELECT_TS = "SELECT last_modified FROM timestamps WHERE resource_name = %s AND parent_id = %s"
_PG_LIST = (
    "SELECT (SELECT t.last_modified FROM timestamps AS t"
    " WHERE t.resource_name = %(r)s AND t.parent_id = %(p)s),"
    " r.id, r.last_modified, r.data::text FROM records AS r"
    " WHERE r.resource_name = %(r)s AND r.parent_id = %(p)s AND NOT r.deleted"
    " AND r.data->'edible' = %(edible)s::jsonb{after}"
    " ORDER BY r.data->'size' DESC, r.last_modified DESC, r.id ASC LIMIT %(limit)s"
)
_PG_AFTER = (
    " AND (r.data->'size' < %(size)s::jsonb"
    " OR (r.data->'size' = %(size)s::jsonb AND r.last_modified < %(lm)s))"
)
_PATCH_ATTEMPTS = 5


class PostgreSQLStore:
    """Records in PostgreSQL; one autocommit connection per thread."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self.psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            self._local.conn = conn
            with self._schema_lock:
                if not self._schema_ready:
                    create_postgresql_schema(conn)
                    self._schema_ready = True
        return conn

    @staticmethod
    def _params(parent: str, **params: Any) -> dict[str, Any]:
        return {"r": RESOURCE, "p": parent, **params}

    def get(self, parent: str, object_id: str) -> tuple[int, dict[str, Any]] | None:
        row = self._connection().execute(_PG_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
        if row is None:
            return None
        return row[0], orjson.loads(row[1])

    def create_many(self, parent: str, owns: list[dict[str, Any]]) -> list[tuple[str, int]]:
        conn = self._connection()
        params = [
            self._params(parent, id=str(uuid.uuid4()), data=orjson.dumps(own).decode())
            for own in owns
        ]
        if len(params) == 1:
            row = conn.execute(_PG_CREATE, params[0]).fetchone()
            return [(params[0]["id"], row[0])]
        created = []
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_PG_CREATE, params, returning=True)
            for item in params:
                created.append((item["id"], cur.fetchone()[0]))
                cur.nextset()
        return created

    def patch(
        self, parent: str, object_id: str, changes: dict[str, Any], if_match: int | None
    ) -> tuple[dict[str, Any], int]:
        conn = self._connection()
        for _ in range(_PATCH_ATTEMPTS):
            row = conn.execute(_PG_SELECT_ONE, (RESOURCE, parent, object_id)).fetchone()
            if row is None:
                raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
            if if_match is not None and row[0] != if_match:
                raise _Error("412 Precondition Failed", "modified meanwhile")
            old = orjson.loads(row[1])
            own = _check({**old, **changes})
            if own == old:
                return own, row[0]
            params = self._params(parent, id=object_id, lm=row[0], data=orjson.dumps(own).decode())
            done = conn.execute(_PG_UPDATE, params).fetchone()
            if done is not None:
                return own, done[0]
            if if_match is not None:
                raise _Error("412 Precondition Failed", "modified meanwhile")
            # Changed between the read and the write, no If-Match: merge again.
        raise _Error("409 Conflict", "the record keeps changing; retry")

    def delete(self, parent: str, object_id: str, if_match: int | None) -> int:
        params = self._params(parent, id=object_id, lm=if_match)
        done = self._connection().execute(_PG_BURY, params).fetchone()
        if done is None:
            raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
        return int(done[0])

    def list(
        self, parent: str, edible: bool, limit: int, after: tuple[Any, int] | None
    ) -> tuple[int, list[tuple[str, int, dict[str, Any]]]]:
        conn = self._connection()
        params = self._params(parent, edible="true" if edible else "false", limit=limit)
        if after is not None:
            params.update(size=orjson.dumps(after[0]).decode(), lm=after[1])
        rows = conn.execute(_PG_LIST.format(after=_PG_AFTER if after else ""), params).fetchall()
        if rows:
            timestamp = rows[0][0] or 0
        else:
            row = conn.execute(_PG_SELECT_TS, (RESOURCE, parent)).fetchone()
            timestamp = row[0] if row is not None else 0
        return timestamp, [(i, lm, orjson.loads(data)) for _, i, lm, data in rows]

    def reset(self) -> None:
        """Forget this thread's connection (after a connection-level error)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def create_postgresql_schema(conn: Any) -> None:
    """The floor's tables (idempotent; serialized across processes by an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4242)")
        for statement in POSTGRESQL_SCHEMA:
            conn.execute(statement)


_POSTGRESQL_URL = os.environ.get("FLOOR_POSTGRESQL_URL")
_store: SQLiteStore | PostgreSQLStore = (
    PostgreSQLStore(_POSTGRESQL_URL)
    if _POSTGRESQL_URL
    else SQLiteStore(os.environ.get("FLOOR_DB", "floor.sqlite"))
)


# -- handlers --------------------------------------------------------------------


def _check(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Error("400 Bad Request", "data must be an object")
    own = {k: v for k, v in data.items() if k not in ("id", "last_modified", "deleted")}
    if not _validator.is_valid(own):
        errors = [e.message for e in _validator.iter_errors(own)]
        raise _Error("400 Bad Request", "; ".join(errors))
    return own


def _body(environ: dict[str, Any]) -> Any:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        return orjson.loads(environ["wsgi.input"].read(length))
    except orjson.JSONDecodeError:
        raise _Error("400 Bad Request", "invalid JSON") from None


def _data(environ: dict[str, Any]) -> Any:
    body = _body(environ)
    if not isinstance(body, dict) or "data" not in body:
        raise _Error("400 Bad Request", "body must be {'data': {...}}")
    return body["data"]


def _record(object_id: str, timestamp: int, own: dict[str, Any]) -> dict[str, Any]:
    own["id"], own["last_modified"] = object_id, timestamp
    return own


def create(environ: dict[str, Any], parent: str) -> tuple[str, Any, int | None]:
    own = _check(_data(environ))
    [(object_id, timestamp)] = _store.create_many(parent, [own])
    return "201 Created", {"data": _record(object_id, timestamp, own)}, timestamp


def get(parent: str, object_id: str) -> tuple[str, Any, int | None]:
    found = _store.get(parent, object_id)
    if found is None:
        raise _Error("404 Not Found", "not found")
    timestamp, own = found
    return "200 OK", {"data": _record(object_id, timestamp, own)}, timestamp


def _if_match(environ: dict[str, Any]) -> int | None:
    raw = environ.get("HTTP_IF_MATCH")
    if raw is None:
        return None
    raw = raw.strip()
    if len(raw) < 3 or raw[0] != '"' or raw[-1] != '"' or not raw[1:-1].isdigit():
        raise _Error("400 Bad Request", "bad If-Match")
    return int(raw[1:-1])


def patch(environ: dict[str, Any], parent: str, object_id: str) -> tuple[str, Any, int | None]:
    changes = _data(environ)
    if not isinstance(changes, dict):
        raise _Error("400 Bad Request", "data must be an object")
    own, timestamp = _store.patch(parent, object_id, changes, _if_match(environ))
    return "200 OK", {"data": _record(object_id, timestamp, own)}, timestamp


def delete(environ: dict[str, Any], parent: str, object_id: str) -> tuple[str, Any, int | None]:
    timestamp = _store.delete(parent, object_id, _if_match(environ))
    tombstone = {"id": object_id, "last_modified": timestamp, "deleted": True}
    return "200 OK", {"data": tombstone}, timestamp


def _token(raw: str) -> tuple[Any, int]:
    try:
        token = orjson.loads(base64.urlsafe_b64decode(raw.encode()))
        return token["size"], int(token["last_modified"])
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise _Error("400 Bad Request", "bad _token") from None


def list_records(environ: dict[str, Any], parent: str) -> tuple[str, Any, int | None]:
    params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    edible = params.get("edible", "true")
    if edible not in ("true", "false") or params.get("_sort", "-size") != "-size":
        raise _Error("400 Bad Request", "the floor serves edible=<bool>&_sort=-size only")
    limit = int(params.get("_limit", "20"))
    after = _token(params["_token"]) if "_token" in params else None
    timestamp, rows = _store.list(parent, edible == "true", limit + 1, after)
    records = [_record(object_id, lm, own) for object_id, lm, own in rows[:limit]]
    body: dict[str, Any] = {"data": records}
    if len(rows) > limit:
        last = records[-1]
        token = {"size": last.get("size"), "last_modified": last["last_modified"], "id": last["id"]}
        body["next"] = base64.urlsafe_b64encode(orjson.dumps(token)).decode()
    return "200 OK", body, timestamp


def batch(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    body = _body(environ)
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not 0 < len(requests) <= 25:
        raise _Error("400 Bad Request", "requests: 1 to 25 creates")
    defaults = body.get("defaults") or {}
    parents = set()
    checked: list[dict[str, Any] | _Error] = []
    for item in requests:
        sub = {**defaults, **item}
        path = str(sub.get("path", ""))
        route = _split(path if path.startswith(f"{PREFIX}/") else PREFIX + path)
        if sub.get("method") != "POST" or route is None or route[1] is not None:
            raise _Error("400 Bad Request", "the floor batches creates only")
        parents.add(route[0])
        try:
            checked.append(_check((sub.get("body") or {}).get("data")))
        except _Error as exc:
            checked.append(exc)
    if len(parents) != 1:
        raise _Error("400 Bad Request", "the floor batches creates in one collection only")
    [parent] = parents
    valid = [own for own in checked if not isinstance(own, _Error)]
    created = iter(_store.create_many(parent, valid) if valid else [])
    responses = []
    for own in checked:
        if isinstance(own, _Error):
            responses.append({"status": int(own.status[:3]), "body": {"message": own.message}})
            continue
        object_id, timestamp = next(created)
        responses.append(
            {
                "status": 201,
                "path": f"{PREFIX}{parent}/records",
                "headers": {"ETag": f'"{timestamp}"'},
                "body": {"data": _record(object_id, timestamp, own)},
            }
        )
    return "200 OK", {"responses": responses}, None


def _split(path: str) -> tuple[str, str | None] | None:
    """``(parent_id, object id or None)`` of a records path; ``None`` for any other path.

    ``/v1/buckets/b/collections/c/records[/<id>]``: a string split.
    """
    parts = path.split("/")
    if (
        len(parts) in (7, 8)
        and parts[1] == PREFIX[1:]
        and parts[2] == "buckets"
        and parts[4] == "collections"
        and parts[6] == "records"
        and parts[3]
        and parts[5]
    ):
        parent = f"/buckets/{parts[3]}/collections/{parts[5]}"
        if len(parts) == 7:
            return parent, None
        if parts[7]:
            return parent, parts[7]
    return None


def _authenticate(environ: dict[str, Any]) -> str:
    """The user of an ``Authorization: Basic`` header (any pair is accepted); else 401."""
    scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            pair = base64.b64decode(encoded.strip(), validate=True).decode()
            user, colon, _ = pair.partition(":")
            if user and colon:
                return user
    raise _Error("401 Unauthorized", "Basic credentials required")


def _route(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    _authenticate(environ)
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    route = _split(path)
    if route is not None:
        parent, object_id = route
        if object_id is None:
            if method == "POST":
                return create(environ, parent)
            if method == "GET":
                return list_records(environ, parent)
        elif method == "GET":
            return get(parent, object_id)
        elif method == "PATCH":
            return patch(environ, parent, object_id)
        elif method == "DELETE":
            return delete(environ, parent, object_id)
    elif path == f"{PREFIX}/batch" and method == "POST":
        return batch(environ)
    raise _Error("404 Not Found", "no route")


def _dispatch(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    try:
        return _route(environ)
    except _Error as exc:
        return exc.status, {"message": exc.message}, None
    except (sqlite3.Error, OSError) as exc:
        return "503 Service Unavailable", {"message": f"database error: {exc}"}, None
    except Exception as exc:
        if isinstance(_store, PostgreSQLStore) and isinstance(exc, _store.psycopg.Error):
            if isinstance(exc, _store.psycopg.OperationalError):
                _store.reset()
            return "503 Service Unavailable", {"message": f"database error: {exc}"}, None
        raise


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status, body, timestamp = _dispatch(environ)
    payload = orjson.dumps(body)
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("Cache-Control", "no-cache"),
    ]
    if timestamp is not None:
        headers.append(("ETag", f'"{timestamp}"'))
        headers.append(("Last-Modified", email.utils.formatdate(timestamp / 1000, usegmt=True)))
    elif status[:3] == "401":
        headers.append(("WWW-Authenticate", 'Basic realm="floor"'))
    start_response(status, headers)
    return [payload]
