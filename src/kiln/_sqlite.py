"""One SQLite database file shared by the storage, cache and permission backends.

:meth:`SQLiteDatabase.shared` returns one object per file within a process,
so the backends configured on one file share its connections and units of
work. Each thread gets its own connection (WAL journal, ``synchronous =
NORMAL``, a ``busy_timeout``), in autocommit mode: kiln issues ``BEGIN``
itself.

Locking. A unit of work (:meth:`SQLiteDatabase.transaction`, re-entrant)
starts **no** SQLite transaction until its first write, which runs ``BEGIN
IMMEDIATE`` and so takes the database's write lock (waiting up to the busy
timeout). Reads before it run in autocommit, each on a fresh snapshot, so a
unit of work never holds a read snapshot it later tries to upgrade: WAL's
``SQLITE_BUSY_SNAPSHOT`` (a deferred transaction whose snapshot went stale
before its first write) cannot happen. Writers are therefore serialized
database-wide, from their first write to their commit: timestamps assigned
inside that window increase in commit order.

``:memory:`` gives one private in-memory database per :class:`SQLiteDatabase`
(shared per process through :meth:`~SQLiteDatabase.shared`): a single
connection, and every unit of work, reads included, holds a process lock.

Schema. :meth:`SQLiteDatabase.install_schema` (``kiln migrate``) applies
the numbered files of :mod:`kiln.migrations` (``sqlite/<component>/``) and
records each component's version in ``schema_versions``: the mechanism
PostgreSQL uses.

Driver errors (``sqlite3.Error``: a locked database past the busy timeout,
a file that is not a database, a missing directory, a full disk) leave as
:class:`~kiln.exceptions.BackendError`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, ClassVar

import orjson

from kiln.exceptions import BackendError
from kiln.migrations import Migration, plan

__all__ = ["SQLiteDatabase"]

_SCHEMA_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions ("
    " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
)


def _backend_error(exc: sqlite3.Error, path: str) -> BackendError:
    return BackendError(f"SQLite database {path!r} failed: {exc}", original=exc)


# -- SQL functions registered on every connection ----------------------------


def _walk(data: str, keys_json: str) -> Any:
    from kiln.storage._python_filters import MISSING

    node: Any = orjson.loads(data)
    for key in orjson.loads(keys_json):
        if isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return MISSING
    return node


_TYPE_NAMES = {type(None): "null", str: "text", float: "real", list: "array", dict: "object"}


def _sql_json_type(data: str, keys_json: str) -> str | None:
    """``json_type`` for paths SQLite cannot spell (keys with ``"`` or ``\\``)."""
    from kiln.storage._python_filters import MISSING

    value = _walk(data, keys_json)
    if value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "integer"
    return _TYPE_NAMES[type(value)]


def _sql_json_extract(data: str, keys_json: str) -> Any:
    """``json_extract`` for paths SQLite cannot spell."""
    from kiln.storage._python_filters import MISSING

    value = _walk(data, keys_json)
    if value is MISSING:
        return None
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return to_sql_number(value) if isinstance(value, int) else value


def to_sql_number(value: int | float) -> int | float:
    """A number SQLite can bind (integers beyond 64 bits become floats)."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)
    return value


def _sql_like(text: str | None, pattern: str) -> bool:
    from kiln.storage._python_filters import glob_match

    return isinstance(text, str) and glob_match(text, pattern)


def _container(text: Any) -> Any:
    """The array or object whose JSON text ``json_extract`` returned, else None.

    SQLite may call a function before the ``json_type`` guard beside it has
    ruled the row out, so any SQL value can arrive here.
    """
    if isinstance(text, str) and text[:1] in ("[", "{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
    return None


def _sql_json_equal(left: Any, right: str) -> bool:
    from kiln.storage._python_filters import json_equal

    value = _container(left)
    return value is not None and json_equal(value, orjson.loads(right))


def _sql_contains(array: Any, values: str, every: int) -> bool:
    from kiln.storage._python_filters import json_equal

    items = _container(array)
    if not isinstance(items, list):
        return False
    found = (any(json_equal(item, wanted) for item in items) for wanted in orjson.loads(values))
    return all(found) if every else any(found)


_FUNCTIONS: tuple[tuple[str, int, Any], ...] = (
    ("kiln_json_type", 2, _sql_json_type),
    ("kiln_json_extract", 2, _sql_json_extract),
    ("kiln_like", 2, _sql_like),
    ("kiln_json_equal", 2, _sql_json_equal),
    ("kiln_contains", 3, _sql_contains),
)


class _UnitOfWork(threading.local):
    depth = 0
    begun = False
    reading = False


class _Transaction:
    """The context manager returned by :meth:`SQLiteDatabase.transaction`."""

    __slots__ = ("_database",)

    def __init__(self, database: SQLiteDatabase) -> None:
        self._database = database

    def __enter__(self) -> sqlite3.Connection:
        database = self._database
        unit = database._unit
        if unit.depth == 0 and database.in_memory:
            database._memory_lock.acquire()
        unit.depth += 1
        try:
            return database.connection()
        except BaseException:
            self._leave(None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._leave(exc_type)
        if isinstance(exc, sqlite3.Error):
            raise _backend_error(exc, self._database.path) from exc

    def _leave(self, exc_type: type[BaseException] | None) -> None:
        database = self._database
        unit = database._unit
        unit.depth -= 1
        if unit.depth:
            return
        try:
            if unit.begun:
                unit.begun = False
                database._finish(commit=exc_type is None)
        finally:
            if database.in_memory:
                database._memory_lock.release()


def _close_connections(connections: list[tuple[Any, sqlite3.Connection]]) -> None:
    """Close every connection of a database object that is gone."""
    for _, conn in connections:
        conn.close()


class SQLiteDatabase:
    """A SQLite database file, its per-thread connections and units of work.

    :param path: the file (created if missing; its directory must exist), or
        ``":memory:"``.
    :param busy_timeout: seconds a writer waits for the write lock before
        :class:`~kiln.exceptions.BackendError`.
    """

    #: The engine's name in :mod:`kiln.migrations`' folders.
    engine = "sqlite"

    # Weak: a file no backend uses any more is closed when its object goes,
    # so a process that builds many apps (tests) does not run out of files.
    _registry: ClassVar[weakref.WeakValueDictionary[str, SQLiteDatabase]] = (
        weakref.WeakValueDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.in_memory = path == ":memory:"
        self.closed = False
        self._unit = _UnitOfWork()
        self._local = threading.local()
        # Each connection with the thread it belongs to (None: shared, ``:memory:``).
        self._connections: list[
            tuple[weakref.ref[threading.Thread] | None, sqlite3.Connection]
        ] = []
        self._connections_lock = threading.Lock()
        # Closed explicitly when the object is collected: Python 3.13 warns
        # (ResourceWarning) about a connection left to the garbage collector.
        weakref.finalize(self, _close_connections, self._connections)
        self._memory_lock = threading.RLock()
        self._memory_conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    @classmethod
    def shared(cls, path: str, *, busy_timeout: float = 5.0) -> SQLiteDatabase:
        """The process's database object for ``path`` (created on first use)."""
        key = path if path == ":memory:" else os.path.abspath(path)
        with cls._registry_lock:
            database = cls._registry.get(key)
            if database is None or database.closed:
                database = cls(path, busy_timeout=busy_timeout)
                cls._registry[key] = database
            return database

    # -- connections ---------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (the only one for ``:memory:``)."""
        if self._pid != os.getpid():  # pragma: no cover - needs a fork
            # Forked: the parent's connections must not be used here.
            self._pid = os.getpid()
            self._local = threading.local()
            self._connections.clear()
        if self.in_memory:
            if self._memory_conn is None:
                self._memory_conn = self._connect()
            return self._memory_conn
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.closed:
            raise BackendError(f"SQLite database {self.path!r} is closed.")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise _backend_error(exc, self.path) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.in_memory:
                self._use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise _backend_error(exc, self.path) from exc
        for name, arity, function in _FUNCTIONS:
            conn.create_function(name, arity, function, deterministic=True)
        owner = None if self.in_memory else weakref.ref(threading.current_thread())
        with self._connections_lock:
            # A thread that ended leaves its connection behind: close those now,
            # or a server running a thread per connection (`kiln serve`) runs
            # out of files under load (found by the load simulation).
            kept = []
            for other_owner, other in self._connections:
                thread = other_owner() if other_owner is not None else None
                if other_owner is not None and (thread is None or not thread.is_alive()):
                    other.close()
                else:
                    kept.append((other_owner, other))
            kept.append((owner, conn))
            self._connections[:] = kept
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode, one connection at a time.

        Connections switching a new file to WAL at once (workers starting
        together, threads opening their connections) can get "database is
        locked" at once, without SQLite's busy handler waiting: so the switch
        is made under an exclusive ``flock`` of the database file, which
        SQLite's own (``fcntl``) locks do not see.
        """
        import fcntl

        # The file's name as SQLite opened it (``path`` may be a ``file:`` URI).
        filename = conn.execute("PRAGMA database_list").fetchone()[2]
        fd = os.open(filename, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            os.close(fd)  # releases the flock

    def close(self) -> None:
        """Close every connection; the object is unusable afterwards."""
        self.closed = True
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for _, conn in connections:
            conn.close()
        self._local = threading.local()
        self._memory_conn = None

    # -- units of work -------------------------------------------------

    def transaction(self) -> _Transaction:
        """A re-entrant unit of work for this thread; yields the connection.

        Nothing is sent to SQLite until :meth:`begin_write`; the outermost
        block commits on success and rolls back on error. ``sqlite3.Error``
        raised inside leaves as :class:`~kiln.exceptions.BackendError`.
        """
        return _Transaction(self)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run the block's reads in one read transaction (one WAL snapshot).

        Inside a unit of work that already holds the write lock, or inside
        another snapshot, this does nothing. Otherwise a deferred ``BEGIN``
        opens a snapshot that ends with the block; no write may happen inside
        (it would have to upgrade the snapshot, which WAL can refuse).
        """
        unit = self._unit
        if unit.begun or unit.reading or self.in_memory:
            # Already consistent: the write lock is held, or (``:memory:``)
            # every unit of work runs alone on the one connection.
            yield
            return
        conn = self.connection()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise _backend_error(exc, self.path) from exc
        unit.reading = True
        try:
            yield
        finally:
            unit.reading = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def begin_write(self, conn: sqlite3.Connection) -> None:
        """Take the write lock for the current unit of work (``BEGIN IMMEDIATE``)."""
        unit = self._unit
        if unit.depth == 0:
            raise RuntimeError("begin_write() needs an open transaction().")
        if unit.reading:
            raise RuntimeError("No write may happen inside snapshot().")
        if not unit.begun:
            conn.execute("BEGIN IMMEDIATE")
            unit.begun = True

    def _finish(self, *, commit: bool) -> None:
        conn = self.connection()
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _backend_error(exc, self.path) from exc

    def execute(
        self, conn: sqlite3.Connection, query: str, params: Sequence[Any] = ()
    ) -> sqlite3.Cursor:
        """Run ``query`` on ``conn`` (as :meth:`PostgreSQLDatabase.execute
        <kiln._postgresql.PostgreSQLDatabase.execute>` does on PostgreSQL)."""
        return conn.execute(query, params)

    # -- schema --------------------------------------------------------

    def install_schema(
        self, component: str, migrations: Sequence[Migration], *, dry_run: bool = False
    ) -> list[str]:
        """Apply ``component``'s ``migrations`` above its recorded version, as
        :mod:`kiln.migrations` says; return the steps' descriptions (with
        ``dry_run``, of what would be done: nothing is written).

        An up-to-date component takes no write lock. Processes installing at
        once take turns on it, each planning again once it holds it.

        :raises StartupError: the database holds a newer version than
            ``migrations`` know (an older kiln against an upgraded database).
        """
        where = f"SQLite database {self.path!r}"
        with self.transaction() as conn:
            steps, pending = plan(
                component, migrations, self.installed_version(conn, component), where
            )
            if dry_run or not pending:
                return steps
            self.begin_write(conn)
            steps, pending = plan(
                component, migrations, self.installed_version(conn, component), where
            )
            conn.execute(_SCHEMA_VERSIONS)
            for migration in pending:
                for _, statement in migration.steps:
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, migrations[-1].number),
            )
            return steps

    def installed_version(self, conn: sqlite3.Connection, component: str) -> int | None:
        """The schema version recorded for ``component``, or None."""
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
        ).fetchone()
        if row is None:
            return None
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        return None if row is None else int(row[0])
