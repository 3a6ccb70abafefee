"""One PostgreSQL database shared by the storage, permission and cache backends.

:meth:`PostgreSQLDatabase.shared` returns one object per URL within a
process, so the backends configured on one URL share its connection pool
(:class:`psycopg_pool.ConnectionPool`) and its units of work: one request
is **one** transaction across storage, permissions and cache (D10).

Units of work. :meth:`PostgreSQLDatabase.transaction` is re-entrant and
thread-local: the outermost block takes a connection from the pool (in
autocommit mode) and gives it back at the end; nested blocks join it.
Reads before the first write run in autocommit, one statement each, so a
read-only request opens no transaction at all. The first write
(:meth:`~PostgreSQLDatabase.begin_write`) opens one (``READ COMMITTED``),
committed when the outermost block exits normally and rolled back when it
raises. ``BEGIN`` is not a round trip of its own: it travels in one
pipeline with the statement that follows it.

:meth:`~PostgreSQLDatabase.snapshot` runs a block's reads in one ``REPEATABLE
READ, READ ONLY`` transaction, so a list's timestamp, records and count
describe one state; inside a unit of work that already writes it does
nothing.

Connections. The pool opens lazily (nothing connects before the first
query, so building an app or running ``kiln check`` needs no server), and
again in a forked child, which never touches its parent's connections.
Each connection gets ``connect_timeout`` and ``statement_timeout``
(``storage.connect_timeout_seconds``, ``storage.statement_timeout_ms``).
A pooled connection whose server went away (restart, failover,
``pg_terminate_backend``) is not handed out: an idle connection has nothing
to read, so when its socket is readable the server has said something --
usually goodbye -- and :meth:`psycopg_pool.ConnectionPool.check_connection`
decides; the dead connection is dropped and the next one tried at once
(the pool's own ``check`` callback would sleep a second between two dead
connections). A healthy connection costs one ``poll()``, no round trip.

Every driver error (:class:`psycopg.Error`, which includes the pool's
:class:`~psycopg_pool.PoolTimeout`) leaves as
:class:`~kiln.exceptions.BackendError`, which views answer with 503;
serialization failures and deadlocks as its subclass
:class:`~kiln.exceptions.TransientBackendError`, on which views run the
request again (``storage.transaction_retries``).

This module imports psycopg lazily: it registers the ``storage.*`` pool
settings and is imported by ``kiln settings`` on machines without the
driver. Choosing a PostgreSQL backend without the driver fails at startup.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from kiln.exceptions import BackendError, ConfigError, StartupError, TransientBackendError

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

__all__ = ["PostgreSQLDatabase", "database_for"]

#: What is missing when ``psycopg`` or ``psycopg_pool`` cannot be imported.
INSTALL_MESSAGE = (
    "The PostgreSQL backends need the psycopg 3 driver and psycopg_pool, which are not "
    "installed. Install them with `pip install kiln[postgresql]`."
)

Params = Mapping[str, Any] | Sequence[Any] | None
Statement = tuple[str, Params]

#: Key of the advisory lock serializing schema changes between processes.
SCHEMA_LOCK = 0x6B696C6E  # "kiln"

_BEGIN_WRITE = "BEGIN"
_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

_SCHEMA_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions ("
    " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StartupError(INSTALL_MESSAGE) from exc


def _is_driver_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error)


def describe(url: str) -> str:
    """``host:port/dbname`` of ``url``, never its password (for messages and logs)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or 5432
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _readable(fd: int) -> bool:
    if not hasattr(select, "poll"):  # pragma: no cover - Windows has no poll()
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def usable(conn: Connection[Any]) -> bool:
    """Whether a pooled connection still works (see the module docstring)."""
    import psycopg
    from psycopg_pool import ConnectionPool

    try:
        if _readable(conn.fileno()):
            ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


class _UnitOfWork(threading.local):
    depth = 0
    conn: Any = None
    #: A ``BEGIN`` to send with the next statement.
    pending: str | None = None
    #: A write transaction was asked for (``begin_write``).
    writing = False
    #: Inside :meth:`PostgreSQLDatabase.snapshot`.
    reading = False
    #: A ``BEGIN`` reached the server: the transaction must be ended.
    open = False


class _Transaction:
    """The context manager returned by :meth:`PostgreSQLDatabase.transaction`."""

    __slots__ = ("_database",)

    def __init__(self, database: PostgreSQLDatabase) -> None:
        self._database = database

    def __enter__(self) -> Connection[Any]:
        database = self._database
        unit = database._unit
        if unit.depth == 0:
            unit.conn = database._checkout()
        unit.depth += 1
        conn: Connection[Any] = unit.conn
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        database = self._database
        unit = database._unit
        unit.depth -= 1
        if unit.depth == 0:
            database._end(commit=exc_type is None)
        if exc is not None and _is_driver_error(exc):
            raise database.error(exc) from exc


class PostgreSQLDatabase:
    """A PostgreSQL database, its connection pool and its units of work.

    :param url: a libpq connection string or URL
        (``postgresql://user:password@host:5432/dbname``).
    :param pool_size: most connections the pool opens.
    :param pool_timeout: seconds a unit of work waits for a connection.
    :param connect_timeout: seconds opening a connection may take (libpq
        counts at least 2).
    :param statement_timeout_ms: longest run of one statement; ``0``: no limit.

    :raises StartupError: psycopg or psycopg_pool is not installed.
    :raises ConfigError: ``url`` is not a connection string.
    """

    _registry: ClassVar[dict[str, PostgreSQLDatabase]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 15_000,
    ) -> None:
        _require_driver()
        from psycopg import ProgrammingError

        try:
            self.name = describe(url)
        except ProgrammingError as exc:
            raise ConfigError(
                f"{url!r} is not a PostgreSQL connection URL ({str(exc).strip()}). Use the form "
                "postgresql://user:password@host:5432/dbname."
            ) from None
        self.url = url
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.closed = False
        self._unit = _UnitOfWork()
        self._pool: ConnectionPool[Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()
        #: Pools inherited through a fork: kept, never closed, never used.
        self._orphans: list[Any] = []

    @classmethod
    def shared(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 15_000,
    ) -> PostgreSQLDatabase:
        """The process's database object for ``url`` (created on first use).

        Later calls with the same URL get the same object whatever their
        other arguments: the backends of one configuration share one pool.
        """
        with cls._registry_lock:
            database = cls._registry.get(url)
            if database is None or database.closed:
                database = cls(
                    url,
                    pool_size=pool_size,
                    pool_timeout=pool_timeout,
                    connect_timeout=connect_timeout,
                    statement_timeout_ms=statement_timeout_ms,
                )
                cls._registry[url] = database
            return database

    def error(self, exc: BaseException) -> BackendError:
        """``exc``, a driver error, as the :class:`BackendError` to raise: a
        :class:`TransientBackendError` for a serialization failure or a
        deadlock (the server rolled the unit of work back; it may run again)."""
        from psycopg.errors import DeadlockDetected, SerializationFailure
        from psycopg_pool import PoolTimeout

        message = f"PostgreSQL database {self.name} failed: {exc}"
        if isinstance(exc, SerializationFailure | DeadlockDetected):
            return TransientBackendError(message, original=exc)
        if isinstance(exc, PoolTimeout):
            message = (
                f"PostgreSQL database {self.name} gave no connection within "
                f"{self.pool_timeout:g} s: the server is down or unreachable (the "
                "psycopg.pool log says why), or every pooled connection is busy "
                "(raise storage.pool_size)."
            )
        return BackendError(message, original=exc)

    # -- connections ---------------------------------------------------

    def _connection_kwargs(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(self.connect_timeout)),
        }
        if self.statement_timeout_ms:
            given = conninfo_to_dict(self.url).get("options") or ""
            kwargs["options"] = f"{given} -c statement_timeout={int(self.statement_timeout_ms)}"
        return kwargs

    @staticmethod
    def _configure(conn: Connection[Any]) -> None:
        import orjson
        from psycopg.types.json import set_json_loads

        set_json_loads(orjson.loads, conn)

    def pool(self) -> ConnectionPool[Connection[Any]]:
        """This process's pool, opened on first use."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid() and not self.closed:
            return pool
        from psycopg_pool import ConnectionPool

        with self._pool_lock:
            if self.closed:
                raise BackendError(f"PostgreSQL database {self.name} is closed.")
            if self._pid != os.getpid():  # pragma: no cover - needs a fork
                # The parent's connections and worker threads are not ours.
                self._orphans.append(self._pool)
                self._pool = None
                self._pid = os.getpid()
                self._unit = _UnitOfWork()
            if self._pool is None:  # pragma: no branch - else another thread opened it
                self._pool = ConnectionPool(
                    self.url,
                    kwargs=self._connection_kwargs(),
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.pool_timeout,
                    configure=self._configure,
                    name=f"kiln {self.name}",
                    open=False,
                )
                self._pool.open(wait=False)
            return self._pool

    def _checkout(self) -> Connection[Any]:
        import psycopg

        deadline = time.monotonic() + self.pool_timeout
        try:
            pool = self.pool()
            while True:
                conn = pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
                if usable(conn):
                    return conn
                # Closed now: the pool drops it and opens a replacement.
                pool.putconn(conn)
        except psycopg.Error as exc:
            raise self.error(exc) from exc

    def _checkin(self, conn: Connection[Any]) -> None:
        assert self._pool is not None  # the connection came from it
        self._pool.putconn(conn)

    def close(self) -> None:
        """Close the pool and its connections; the object is unusable afterwards."""
        with self._pool_lock:
            self.closed = True
            pool = self._pool
        if pool is not None and self._pid == os.getpid():
            # Kept: connections still checked out are closed when put back.
            pool.close()

    # -- units of work -------------------------------------------------

    def transaction(self) -> _Transaction:
        """A re-entrant unit of work for this thread; yields its connection.

        The outermost block commits on success and rolls back on error;
        driver errors raised inside leave as :class:`BackendError`.
        """
        return _Transaction(self)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run the block's reads in one ``REPEATABLE READ, READ ONLY`` transaction.

        Does nothing inside a unit of work that writes, or inside another
        snapshot. No write may happen inside (:class:`RuntimeError`).
        """
        unit = self._unit
        if unit.writing or unit.reading:
            yield
            return
        with self.transaction() as conn:
            unit.reading = True
            unit.pending = _BEGIN_SNAPSHOT
            try:
                yield
            finally:
                unit.reading = False
                unit.pending = None
                if unit.open:
                    unit.open = False
                    self._rollback(conn)

    def begin_write(self, conn: Connection[Any]) -> None:
        """Open the write transaction of the current unit of work (once).

        The ``BEGIN`` is sent with the next statement.
        """
        unit = self._unit
        if unit.depth == 0:
            raise RuntimeError("begin_write() needs an open transaction().")
        if unit.reading:
            raise RuntimeError("No write may happen inside snapshot().")
        if not unit.writing:
            unit.writing = True
            unit.pending = _BEGIN_WRITE

    def execute(self, conn: Connection[Any], query: str, params: Params = None) -> Cursor[Any]:
        """Run ``query`` on ``conn`` (with the pending ``BEGIN``, if any)."""
        if self._unit.pending is not None:
            return self.pipeline(conn, (query, params))[0]
        return conn.execute(query, params)

    def pipeline(self, conn: Connection[Any], *statements: Statement) -> list[Cursor[Any]]:
        """Run ``statements`` in order in one network round trip; return their cursors.

        Each statement still runs after the previous one ended, with its own
        snapshot (``READ COMMITTED``): a read after a lock sees everything
        committed before the lock was granted.
        """
        unit = self._unit
        begin, unit.pending = unit.pending, None
        with conn.pipeline():
            if begin is not None:
                unit.open = True
                conn.execute(begin)
            return [conn.execute(query, params) for query, params in statements]

    def _end(self, *, commit: bool) -> None:
        unit = self._unit
        conn, opened = unit.conn, unit.open
        unit.conn = None
        unit.pending = None
        unit.writing = unit.reading = unit.open = False
        try:
            if opened:
                if commit:
                    self._commit(conn)
                else:
                    self._rollback(conn)
        finally:
            self._checkin(conn)

    def _commit(self, conn: Connection[Any]) -> None:
        import psycopg

        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._rollback(conn)
            raise self.error(exc) from exc

    @staticmethod
    def _rollback(conn: Connection[Any]) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")

    # -- schema --------------------------------------------------------

    def install_schema(
        self,
        component: str,
        version: int,
        statements: Sequence[tuple[str, str]],
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Create ``component``'s tables once and record its schema ``version``.

        ``statements`` are ``(description, SQL)`` pairs. Idempotent: a
        component whose version is recorded is left alone. Returns the
        descriptions of the steps done (with ``dry_run``, that would be done;
        nothing is written). Processes installing at once take turns on an
        advisory lock; statements run without ``statement_timeout``.
        """
        with self.transaction() as conn:
            if not dry_run:
                self.begin_write(conn)
                self.pipeline(
                    conn,
                    ("SET LOCAL statement_timeout = 0", None),
                    ("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
                )
            if self.installed_version(conn, component) is not None:
                # Version 1 is the only one: later versions add migrations here.
                return []
            steps = ["create table schema_versions", *(d for d, _ in statements)]
            steps.append(f"record {component} schema version {version}")
            if dry_run:
                return steps
            self.execute(conn, _SCHEMA_VERSIONS)
            for _, statement in statements:
                self.execute(conn, statement)
            self.execute(
                conn,
                "INSERT INTO schema_versions (component, version) VALUES (%s, %s)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, version),
            )
            return steps

    def installed_version(self, conn: Connection[Any], component: str) -> int | None:
        """The schema version recorded for ``component``, or None."""
        row = self.execute(conn, "SELECT to_regclass('schema_versions') IS NOT NULL").fetchone()
        if not (row and row[0]):
            return None
        row = self.execute(
            conn, "SELECT version FROM schema_versions WHERE component = %s", (component,)
        ).fetchone()
        return None if row is None else int(row[0])


# -- settings ----------------------------------------------------------------


def _at_least(minimum: float) -> Any:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"

    return check


def _register_settings() -> None:
    from kiln.config import Setting, register_setting

    for setting in (
        Setting(
            "storage.pool_size",
            (int,),
            10,
            "Most connections each process opens to a PostgreSQL database (shared by the "
            "storage, permission and cache backends on one URL); give it at least the "
            "number of threads serving requests.",
            check_value=_at_least(1),
        ),
        Setting(
            "storage.pool_timeout_seconds",
            (int, float),
            5.0,
            "How long a request waits for a free PostgreSQL connection before failing (503).",
            check_value=_at_least(0.001),
        ),
        Setting(
            "storage.connect_timeout_seconds",
            (int, float),
            5.0,
            "How long opening a PostgreSQL connection may take (libpq counts at least 2).",
            check_value=_at_least(1),
        ),
        Setting(
            "storage.statement_timeout_ms",
            (int,),
            15_000,
            "Longest a PostgreSQL statement (lock waits included) may run before the server "
            "cancels it and the request fails (503); 0: no limit. `kiln migrate` has none.",
            check_value=_at_least(0),
        ),
    ):
        register_setting(setting)


_register_settings()


def database_for(config: Any, url: str) -> PostgreSQLDatabase:
    """The shared database for ``url``, with the pool settings of ``config``."""
    return PostgreSQLDatabase.shared(
        url,
        pool_size=int(config.setting("storage.pool_size")),
        pool_timeout=float(config.setting("storage.pool_timeout_seconds")),
        connect_timeout=float(config.setting("storage.connect_timeout_seconds")),
        statement_timeout_ms=int(config.setting("storage.statement_timeout_ms")),
    )
