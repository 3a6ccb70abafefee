"""The bare floor: a framework-free WSGI app doing kiln's SQLite work, no more.

``bench/resources.py`` runs it under gunicorn beside kiln (``gunicorn
bench.floor_app:application``) to show what the same SQL costs without a
framework. It keeps kiln's guarantees for the operations it serves:

- the schema of :mod:`kiln.storage.sqlite` (same tables, same index, a
  tombstone is ``deleted = 1``), one connection per thread, WAL,
  ``synchronous = NORMAL``, a busy timeout, autocommit with explicit ``BEGIN``;
- every write under ``BEGIN IMMEDIATE``: the existence / ``If-Match``
  check, the collection timestamp bump ``max(now, current + 1)`` and the
  write share one write lock, so timestamps increase in commit order;
- the body validated by the same JSON Schema with the same validator
  (``jsonschema_rs``), JSON in and out with orjson, ``ETag`` and
  ``Last-Modified`` on records and lists;
- a batch of creates is one transaction (all or nothing).

It is deliberately naive elsewhere: a list sorts on ``json_extract`` without
kiln's type ranks (the bench data has one type per field), routing is a
string split, errors are bare.

Routes (``/v1`` prefix, one resource, ``mushrooms``)::

    POST   /v1/mushrooms              create
    GET    /v1/mushrooms?edible=true&_sort=-size&_limit=20   list (filter + sort)
    GET    /v1/mushrooms/<id>         get
    PATCH  /v1/mushrooms/<id>         merge top-level keys; If-Match honoured
    DELETE /v1/mushrooms/<id>         tombstone
    POST   /v1/batch                  creates only, one transaction

The database file is ``$FLOOR_DB`` (default ``floor.sqlite``).
"""

from __future__ import annotations

import base64
import email.utils
import os
import sqlite3
import threading
import time
import uuid
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

RESOURCE = "mushroom"
PARENT = ""
PREFIX = "/v1"
COLLECTION = f"{PREFIX}/mushrooms"

_SCHEMA_SQL = (
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
_SELECT_ONE = (
    "SELECT last_modified, deleted, data FROM records"
    " WHERE resource_name = ? AND parent_id = ? AND id = ?"
)
_SELECT_TS = "SELECT last_modified FROM timestamps WHERE resource_name = ? AND parent_id = ?"
_UPSERT_TS = (
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
    "UPDATE records SET deleted = 1, last_modified = ?, data = '{\"deleted\":true}'"
    " WHERE resource_name = ? AND parent_id = ? AND id = ?"
)
_LIST = (
    "SELECT id, last_modified, data FROM records"
    " WHERE resource_name = ? AND parent_id = ? AND deleted = 0"
    " AND json_type(data, '$.edible') = ?"
    " ORDER BY json_extract(data, '$.size') DESC, last_modified DESC, id ASC LIMIT ?"
)

_validator = jsonschema_rs.validator_for(SCHEMA)
_local = threading.local()
_DB_PATH = os.environ.get("FLOOR_DB", "floor.sqlite")
_schema_lock = threading.Lock()
_schema_ready = False


def _connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(
            _DB_PATH,
            timeout=5.0,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _local.conn = conn
        with _schema_lock:
            if not _schema_ready:
                _init_schema(conn)
    return conn


def _init_schema(conn: sqlite3.Connection) -> None:
    global _schema_ready
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA_SQL:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _schema_ready = True


class _Error(Exception):
    def __init__(self, status: str, message: str) -> None:
        self.status = status
        self.message = message


# -- writes (caller holds BEGIN IMMEDIATE) -------------------------------------


def _next_timestamp(conn: sqlite3.Connection, floor: int | None = None) -> int:
    row = conn.execute(_SELECT_TS, (RESOURCE, PARENT)).fetchone()
    current = row[0] if row is not None else 0
    timestamp = max(time.time_ns() // 1_000_000, current + 1)
    conn.execute(_UPSERT_TS, (RESOURCE, PARENT, timestamp))
    return timestamp


def _check(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Error("400 Bad Request", "data must be an object")
    own = {k: v for k, v in data.items() if k not in ("id", "last_modified", "deleted")}
    if not _validator.is_valid(own):
        errors = [e.message for e in _validator.iter_errors(own)]
        raise _Error("400 Bad Request", "; ".join(errors))
    return own


def _create_in(conn: sqlite3.Connection, data: Any) -> tuple[str, dict[str, Any]]:
    """Create one record (inside the caller's write transaction): (status, record)."""
    own = _check(data)
    object_id = str(uuid.uuid4())
    row = conn.execute(_SELECT_ONE, (RESOURCE, PARENT, object_id)).fetchone()
    if row is not None and not row[1]:
        record = orjson.loads(row[2])
        record["id"], record["last_modified"] = object_id, row[0]
        return "200 OK", record
    timestamp = _next_timestamp(conn)
    text = orjson.dumps(own)
    conn.execute(_UPSERT_RECORD, (RESOURCE, PARENT, object_id, timestamp, text))
    own["id"], own["last_modified"] = object_id, timestamp
    return "201 Created", own


class _Write:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __enter__(self) -> sqlite3.Connection:
        self.conn = _connection()
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


# -- handlers ------------------------------------------------------------------


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


def create(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    data = _data(environ)
    with _Write() as conn:
        status, record = _create_in(conn, data)
    return status, {"data": record}, record["last_modified"]


def get(object_id: str) -> tuple[str, Any, int | None]:
    row = _connection().execute(_SELECT_ONE, (RESOURCE, PARENT, object_id)).fetchone()
    if row is None or row[1]:
        raise _Error("404 Not Found", "not found")
    record = orjson.loads(row[2])
    record["id"], record["last_modified"] = object_id, row[0]
    return "200 OK", {"data": record}, row[0]


def _if_match(environ: dict[str, Any]) -> int | None:
    raw = environ.get("HTTP_IF_MATCH")
    if raw is None:
        return None
    raw = raw.strip()
    if len(raw) < 3 or raw[0] != '"' or raw[-1] != '"' or not raw[1:-1].isdigit():
        raise _Error("400 Bad Request", "bad If-Match")
    return int(raw[1:-1])


def patch(environ: dict[str, Any], object_id: str) -> tuple[str, Any, int | None]:
    changes = _data(environ)
    if not isinstance(changes, dict):
        raise _Error("400 Bad Request", "data must be an object")
    if_match = _if_match(environ)
    with _Write() as conn:
        row = conn.execute(_SELECT_ONE, (RESOURCE, PARENT, object_id)).fetchone()
        if row is None or row[1]:
            raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
        if if_match is not None and row[0] != if_match:
            raise _Error("412 Precondition Failed", "modified meanwhile")
        old = orjson.loads(row[2])
        own = _check({**old, **changes})
        if own == old:
            own["id"], own["last_modified"] = object_id, row[0]
            return "200 OK", {"data": own}, row[0]
        timestamp = _next_timestamp(conn)
        conn.execute(_UPSERT_RECORD, (RESOURCE, PARENT, object_id, timestamp, orjson.dumps(own)))
    own["id"], own["last_modified"] = object_id, timestamp
    return "200 OK", {"data": own}, timestamp


def delete(environ: dict[str, Any], object_id: str) -> tuple[str, Any, int | None]:
    if_match = _if_match(environ)
    with _Write() as conn:
        row = conn.execute(_SELECT_ONE, (RESOURCE, PARENT, object_id)).fetchone()
        if row is None or row[1]:
            raise _Error("412 Precondition Failed" if if_match else "404 Not Found", "absent")
        if if_match is not None and row[0] != if_match:
            raise _Error("412 Precondition Failed", "modified meanwhile")
        timestamp = _next_timestamp(conn)
        conn.execute(_BURY, (timestamp, RESOURCE, PARENT, object_id))
    tombstone = {"id": object_id, "last_modified": timestamp, "deleted": True}
    return "200 OK", {"data": tombstone}, timestamp


def list_records(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    edible = params.get("edible", "true")
    if edible not in ("true", "false") or params.get("_sort", "-size") != "-size":
        raise _Error("400 Bad Request", "the floor serves edible=<bool>&_sort=-size only")
    limit = int(params.get("_limit", "20"))
    conn = _connection()
    row = conn.execute(_SELECT_TS, (RESOURCE, PARENT)).fetchone()
    timestamp = row[0] if row is not None else 0
    rows = conn.execute(_LIST, (RESOURCE, PARENT, edible, limit + 1)).fetchall()
    records = []
    for object_id, last_modified, data in rows[:limit]:
        record = orjson.loads(data)
        record["id"], record["last_modified"] = object_id, last_modified
        records.append(record)
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
    datas = []
    for item in requests:
        sub = {**defaults, **item}
        if sub.get("method") != "POST" or sub.get("path") not in ("/mushrooms", COLLECTION):
            raise _Error("400 Bad Request", "the floor batches creates only")
        datas.append((sub.get("body") or {}).get("data"))
    responses = []
    with _Write() as conn:
        for data in datas:
            try:
                status, record = _create_in(conn, data)
            except _Error as exc:
                responses.append({"status": int(exc.status[:3]), "body": {"message": exc.message}})
                continue
            responses.append(
                {
                    "status": int(status[:3]),
                    "path": COLLECTION,
                    "headers": {"ETag": f'"{record["last_modified"]}"'},
                    "body": {"data": record},
                }
            )
    return "200 OK", {"responses": responses}, None


def _route(environ: dict[str, Any]) -> tuple[str, Any, int | None]:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    if path == COLLECTION:
        if method == "POST":
            return create(environ)
        if method == "GET":
            return list_records(environ)
    elif path.startswith(COLLECTION + "/"):
        object_id = path[len(COLLECTION) + 1 :]
        if method == "GET":
            return get(object_id)
        if method == "PATCH":
            return patch(environ, object_id)
        if method == "DELETE":
            return delete(environ, object_id)
    elif path == f"{PREFIX}/batch" and method == "POST":
        return batch(environ)
    raise _Error("404 Not Found", "no route")


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    try:
        status, body, timestamp = _route(environ)
    except _Error as exc:
        status, body, timestamp = exc.status, {"message": exc.message}, None
    payload = orjson.dumps(body)
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("Cache-Control", "no-cache"),
    ]
    if timestamp is not None:
        headers.append(("ETag", f'"{timestamp}"'))
        headers.append(("Last-Modified", email.utils.formatdate(timestamp / 1000, usegmt=True)))
    start_response(status, headers)
    return [payload]
