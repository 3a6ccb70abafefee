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

A server that stops answering (hung, overloaded, ``SIGSTOP``) cannot cancel
a statement it does not run, and TCP keepalives do not notice it: the
kernel still acknowledges. A monitor thread (one per process) closes the
socket of every statement still waiting ``statement_timeout`` plus
``connect_timeout`` after it was sent, so the request fails with
:class:`~kiln.exceptions.BackendError` instead of hanging its worker
(``kiln migrate``'s statements are not watched). It also nudges a pool that
keeps requests waiting with no connection to offer into connecting again:
the pool's own retries back off, and a request waiting for a server that
just came back should not wait for the next one (``RECONNECT_TIMEOUT``).

Read replicas. :meth:`PostgreSQLDatabase.use_replicas` gives a primary its
streaming replicas (``storage.read_urls``); :meth:`PostgreSQLDatabase.route`
runs a request's unit of work with the storage's reads
(:meth:`~PostgreSQLDatabase.reader`) on a replica when it may: a ``GET`` or
``HEAD`` without ``If-Match``, outside a unit of work already open (a batch
reads from the primary), from a caller who did not write through this
process in the last ``storage.read_your_writes_seconds``, and while some
replica is fresh enough. Freshness is measured without privileges or
clocks: every ``storage.replica_check_seconds`` a checker thread notes the
primary's WAL insert position, then asks each replica how far it replayed;
a replica that replayed the position noted at time *t* holds every commit
acknowledged before *t*, and serves only while *t* is less than
``storage.replica_max_lag_seconds`` ago. A replica read older than what
the client says it has seen (:meth:`~PostgreSQLDatabase.require_fresh`), or
a failing replica (marked down for ``storage.replica_retry_seconds``),
raises :class:`ReplicaUnavailable` and the whole unit of work runs again on
the primary. The primary's unit of work (and its connection) is taken as
usual: permission reads and any write stay on the primary.

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

import collections
import contextlib
import logging
import math
import os
import random
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.resources.abc import Traversable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from kiln.exceptions import BackendError, ConfigError, StartupError, TransientBackendError

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

__all__ = [
    "PostgreSQLDatabase",
    "ReadReplicas",
    "ReplicaUnavailable",
    "database_for",
    "replicas_for",
]

logger = logging.getLogger("kiln.postgresql")

T = TypeVar("T")

#: What is missing when ``psycopg`` or ``psycopg_pool`` cannot be imported.
INSTALL_MESSAGE = (
    "The PostgreSQL backends need the psycopg 3 driver and psycopg_pool, which are not "
    "installed. Install them with `pip install 'kiln-framework[postgresql]'`."
)

Params = Mapping[str, Any] | Sequence[Any] | None
Statement = tuple[str, Params]

#: Key of the advisory lock serializing schema changes between processes.
SCHEMA_LOCK = 0x6B696C6E  # "kiln"

#: Seconds between two rounds of the monitor thread (hung statements, starved pools).
MONITOR_PERIOD = 0.2
#: Seconds the pool keeps retrying a connection that failed before giving up;
#: the next request (or the monitor) starts again at once. psycopg_pool's
#: default (5 minutes of doubling delays) could leave a pool idle for a minute
#: after its server came back.
RECONNECT_TIMEOUT = 0.5
#: Methods a read replica may answer.
READ_METHODS = frozenset({"GET", "HEAD"})

_BEGIN_WRITE = "BEGIN"
_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


class Migration(NamedTuple):
    """One schema version of a component: its ``number`` and its
    ``(description, SQL)`` steps."""

    number: int
    steps: tuple[tuple[str, str], ...]


_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_migrations(
    directory: Traversable, prelude: Mapping[int, Sequence[tuple[str, str]]] | None = None
) -> tuple[Migration, ...]:
    """The numbered migrations of ``directory`` (``0001_name.sql``, ...; see
    :mod:`kiln.migrations`), each preceded by its ``prelude`` steps.

    :raises StartupError: a file is misnamed, numbers leave a gap, or a file
        is not a sequence of ``-- step:`` statements.
    """
    files = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    migrations = []
    for number, entry in enumerate(files, start=1):
        match = _MIGRATION_FILE.match(entry.name)
        if match is None or int(match.group(1)) != number:
            raise StartupError(
                f"Migration file {entry.name!r}: name migrations 0001_name.sql, "
                "0002_name.sql, ... numbered from 1 without gaps."
            )
        steps = parse_migration(entry.read_text(encoding="utf-8"), entry.name)
        migrations.append(Migration(number, (*(prelude or {}).get(number, ()), *steps)))
    return tuple(migrations)


def parse_migration(text: str, name: str) -> tuple[tuple[str, str], ...]:
    """The ``(description, SQL)`` steps of a migration file's ``text``."""
    steps: list[tuple[str, str]] = []
    description: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- step:"):
            if description is not None:
                raise StartupError(
                    f"Migration file {name!r}: the step {description!r} has no statement "
                    "ending with ';' before the next step."
                )
            description = stripped.removeprefix("-- step:").strip()
            continue
        if not lines and (not stripped or stripped.startswith("--")):
            continue
        if description is None:
            raise StartupError(
                f"Migration file {name!r}: put a '-- step: <description>' line before "
                f"each statement (found {stripped[:40]!r})."
            )
        lines.append(line)
        if stripped.endswith(";"):
            steps.append((description, "\n".join(lines).strip().removesuffix(";")))
            description, lines = None, []
    if description is not None or not steps:
        raise StartupError(
            f"Migration file {name!r}: it must hold statements, each ending with ';'."
        )
    return tuple(steps)


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


def cut(conn: Connection[Any]) -> None:
    """Shut ``conn``'s socket down: a thread waiting on it gets an error at once.

    The way out of a statement sent to a server that stopped answering: it
    cannot cancel what it does not run, and a stopped postmaster takes no
    cancel request either. Never raises (the connection may be closed by now).
    """
    import psycopg

    with (
        contextlib.suppress(psycopg.Error, OSError),
        socket.socket(fileno=os.dup(conn.fileno())) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)


def parse_lsn(text: str) -> int:
    """A ``pg_lsn`` (``16/B374D848``) as a number that orders as the WAL does."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class ReplicaUnavailable(BackendError):
    """A read replica cannot answer this request: it failed (``failed``), or
    it is behind what the request must see. The request runs again on the
    primary (:meth:`PostgreSQLDatabase.route`)."""

    def __init__(
        self, message: str, *, original: BaseException | None = None, failed: bool = True
    ) -> None:
        super().__init__(message, original=original)
        self.failed = failed


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
    #: The read replica the storage reads from (:meth:`PostgreSQLDatabase.route`).
    replica: Any = None
    #: The resource whose reads must not be older than ``seen``.
    resource: str | None = None
    seen = 0
    #: Statements are not watched for hangs (``kiln migrate``).
    unwatched = False


class _Monitor:
    """The thread of this process that looks after every open database
    (:meth:`PostgreSQLDatabase._look_after`) each :data:`MONITOR_PERIOD`."""

    lock = threading.Lock()
    databases: weakref.WeakSet[PostgreSQLDatabase] = weakref.WeakSet()
    pid = 0

    @classmethod
    def watch(cls, database: PostgreSQLDatabase) -> None:
        with cls.lock:
            if cls.pid != os.getpid():
                cls.pid = os.getpid()
                threading.Thread(
                    target=cls.run, name="kiln PostgreSQL monitor", daemon=True
                ).start()
            cls.databases.add(database)

    @classmethod
    def forget(cls, database: PostgreSQLDatabase) -> None:
        with cls.lock:
            cls.databases.discard(database)

    @classmethod
    def run(cls) -> None:
        while True:
            time.sleep(MONITOR_PERIOD)
            cls.round()  # holds the databases strongly only while it runs

    @classmethod
    def round(cls) -> None:
        with cls.lock:
            databases = list(cls.databases)
        for database in databases:
            try:
                database._look_after()
            except Exception:  # pragma: no cover - a bug; the monitor must outlive it
                logger.exception("The PostgreSQL monitor failed on %s.", database.name)

    @classmethod
    def after_fork(cls) -> None:  # pragma: no cover - runs in forked children
        # The thread is not in the child, and the lock may have been held by it.
        cls.lock = threading.Lock()
        cls.databases = weakref.WeakSet()
        cls.pid = 0


if hasattr(os, "register_at_fork"):  # pragma: no branch - Windows has no fork
    os.register_at_fork(after_in_child=_Monitor.after_fork)


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
        A statement not answered ``connect_timeout`` seconds after that has
        its connection closed by kiln (a hung server).
    :param replica_of: the primary this database is a read replica of.

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
        replica_of: PostgreSQLDatabase | None = None,
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
        #: The primary this database is a read replica of (its errors are
        #: :class:`ReplicaUnavailable`), or None.
        self.replica_of = replica_of
        #: This primary's read replicas (:meth:`use_replicas`), or None.
        self.replicas: ReadReplicas | None = None
        self.closed = False
        self._unit = _UnitOfWork()
        #: Per thread: the connection of the statement it waits for, and when
        #: the monitor cuts it (see the module docstring).
        self._in_flight: dict[int, tuple[Connection[Any], float]] = {}
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
        conflict = isinstance(exc, SerializationFailure | DeadlockDetected)
        if self.replica_of is not None:
            # On a replica, a serialization failure is a conflict with recovery:
            # not a reason to stop reading from it, but to read from the primary.
            return ReplicaUnavailable(
                f"PostgreSQL read replica {self.name} failed: {exc}",
                original=exc,
                failed=not conflict,
            )
        if conflict:
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
                    reconnect_timeout=RECONNECT_TIMEOUT,
                    open=False,
                )
                self._pool.open(wait=False)
                _Monitor.watch(self)
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
        if self.replicas is not None:
            self.replicas.close()
        with self._pool_lock:
            self.closed = True
            pool = self._pool
        _Monitor.forget(self)
        if pool is not None and self._pid == os.getpid():
            # Kept: connections still checked out are closed when put back.
            pool.close()

    def _look_after(self) -> None:
        """The monitor's round (see the module docstring)."""
        import psycopg

        now = time.monotonic()
        for conn, deadline in self._in_flight.copy().values():
            if deadline <= now:
                logger.warning(
                    "PostgreSQL database %s did not answer a statement within %g s "
                    "(storage.statement_timeout_ms + storage.connect_timeout_seconds); "
                    "closing its connection.",
                    self.name,
                    self.statement_timeout_ms / 1000 + self.connect_timeout,
                )
                cut(conn)
        pool = self._pool
        assert pool is not None  # watched once its pool exists (in this process)
        stats = pool.get_stats()
        if stats.get("requests_waiting") and not stats.get("pool_available"):
            # Closed meanwhile: nothing to do.
            with contextlib.suppress(psycopg.Error):
                pool.check()  # grows the pool now if it is not already trying

    def _watch(self, conn: Connection[Any], statements: int) -> int:
        """Note that this thread now waits on ``conn`` for ``statements``; returns
        the key to drop from ``_in_flight`` when the wait is over."""
        key = threading.get_ident()
        deadline = math.inf
        if self.statement_timeout_ms and not self._unit.unwatched:
            deadline = (
                time.monotonic()
                + statements * self.statement_timeout_ms / 1000
                + self.connect_timeout
            )
        self._in_flight[key] = (conn, deadline)
        return key

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
        key = self._watch(conn, 1)
        try:
            return conn.execute(query, params)
        finally:
            self._in_flight.pop(key, None)

    def pipeline(self, conn: Connection[Any], *statements: Statement) -> list[Cursor[Any]]:
        """Run ``statements`` in order in one network round trip; return their cursors.

        Each statement still runs after the previous one ended, with its own
        snapshot (``READ COMMITTED``): a read after a lock sees everything
        committed before the lock was granted.
        """
        unit = self._unit
        begin, unit.pending = unit.pending, None
        key = self._watch(conn, len(statements))
        try:
            with conn.pipeline():
                if begin is not None:
                    unit.open = True
                    conn.execute(begin)
                return [conn.execute(query, params) for query, params in statements]
        finally:
            self._in_flight.pop(key, None)

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
            self.execute(conn, "COMMIT")
        except psycopg.Error as exc:
            self._rollback(conn)
            raise self.error(exc) from exc

    def _rollback(self, conn: Connection[Any]) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error):
            self.execute(conn, "ROLLBACK")

    # -- read replicas -------------------------------------------------

    def use_replicas(
        self,
        urls: Sequence[str],
        *,
        max_lag: float = 2.0,
        check_interval: float = 0.5,
        retry_interval: float = 5.0,
        read_your_writes: float = 5.0,
    ) -> ReadReplicas:
        """Read from the streaming replicas at ``urls`` (see :class:`ReadReplicas`).

        Once per database: later calls return the replicas of the first
        (the backends of one configuration share them, as they share the pool).
        """
        with self._pool_lock:
            if self.replicas is None:
                self.replicas = ReadReplicas(
                    self,
                    urls,
                    max_lag=max_lag,
                    check_interval=check_interval,
                    retry_interval=retry_interval,
                    read_your_writes=read_your_writes,
                )
            return self.replicas

    def reader(self) -> PostgreSQLDatabase:
        """The database this thread's storage reads go to: the replica chosen
        by :meth:`route`, or this one (always once the unit of work writes)."""
        unit = self._unit
        replica: PostgreSQLDatabase | None = unit.replica
        return self if replica is None or unit.writing else replica

    def require_fresh(self, resource_name: str, timestamp: int) -> None:
        """Check a replica read of ``resource_name`` against what the client has seen.

        ``timestamp`` is the replica's collection timestamp, or its record's
        (``0`` if absent). Timestamps grow in commit order within a
        collection, so a replica whose timestamp is older than one the client
        sent (``If-None-Match``, ``_since``, ``_before``) has not replayed a
        commit the client knows about.

        :raises ReplicaUnavailable: it is older (the request runs again on the primary).
        """
        unit = self._unit
        if timestamp < unit.seen and resource_name == unit.resource:
            raise ReplicaUnavailable(
                f"PostgreSQL read replica {unit.replica.name} is behind timestamp "
                f"{unit.seen} of {resource_name!r}.",
                failed=False,
            )

    def route(
        self,
        work: Callable[[], T],
        *,
        method: str,
        if_match: bool = False,
        resource_name: str = "",
        user_id: str | None = None,
        seen: int | None = None,
    ) -> T:
        """Run a request's ``work`` (its whole unit of work), reading from a
        replica when it may; see the module docstring.

        ``method`` and ``if_match`` (the request has ``If-Match``) say whether
        it may; ``user_id`` (None: anonymous callers, all alike) is who asks,
        ``seen`` the newest timestamp of ``resource_name`` the client sent. A
        :class:`ReplicaUnavailable` from the replica runs ``work`` again on
        the primary; a successful write notes that ``user_id`` wrote.
        """
        replicas = self.replicas
        if replicas is None:
            return work()
        if method not in READ_METHODS:
            rv = work()
            replicas.wrote(user_id)
            return rv
        unit = self._unit
        if if_match or unit.depth or replicas.wrote_recently(user_id):
            return work()
        replica = replicas.pick()
        if replica is None:
            return work()
        unit.replica, unit.resource, unit.seen = replica.database, resource_name, seen or 0
        try:
            return work()
        except ReplicaUnavailable as exc:
            if exc.failed:
                replicas.mark_down(replica, exc)
            else:
                logger.debug("%s Reading from the primary.", str(exc))
        finally:
            unit.replica, unit.resource, unit.seen = None, None, 0
        return work()

    # -- schema --------------------------------------------------------

    def install_schema(
        self,
        component: str,
        migrations: Sequence[Migration],
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Bring ``component``'s schema to its latest version, in one transaction.

        Applies the ``migrations`` numbered above the version recorded in
        ``schema_versions`` (all of them on a new database), then records the
        last number. Idempotent: an up-to-date component is left alone.
        Returns the descriptions of the steps done (with ``dry_run``, that
        would be done; nothing is written). Processes installing at once take
        turns on an advisory lock; statements run without ``statement_timeout``.

        :raises StartupError: the database holds a newer version than
            ``migrations`` know (an older kiln against an upgraded database).
        """
        unit = self._unit
        unwatched, unit.unwatched = unit.unwatched, True
        try:
            return self._install_schema(component, migrations, dry_run=dry_run)
        finally:
            unit.unwatched = unwatched

    def _install_schema(
        self,
        component: str,
        migrations: Sequence[Migration],
        *,
        dry_run: bool,
    ) -> list[str]:
        with self.transaction() as conn:
            if not dry_run:
                self.begin_write(conn)
                self.pipeline(
                    conn,
                    ("SET LOCAL statement_timeout = 0", None),
                    ("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
                )
            installed = self.installed_version(conn, component)
            latest = migrations[-1].number
            if installed is not None and installed > latest:
                raise StartupError(
                    f"The {component} schema of PostgreSQL database {self.name} is version "
                    f"{installed}, newer than this kiln knows ({latest}): upgrade kiln."
                )
            pending = [m for m in migrations if m.number > (installed or 0)]
            if not pending:
                return []
            steps = ["create table schema_versions"] if installed is None else []
            steps += [description for m in pending for description, _ in m.steps]
            steps.append(f"record {component} schema version {latest}")
            if dry_run:
                return steps
            self.execute(conn, _SCHEMA_VERSIONS)
            for migration in pending:
                for _, statement in migration.steps:
                    self.execute(conn, statement)
            self.execute(
                conn,
                "INSERT INTO schema_versions (component, version) VALUES (%s, %s)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, latest),
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


class Replica:
    """One read replica, as :class:`ReadReplicas` sees it."""

    __slots__ = ("database", "fresh_as_of", "retry_at")

    def __init__(self, database: PostgreSQLDatabase) -> None:
        self.database = database
        #: Monotonic time before which every commit acknowledged by the
        #: primary is replayed here (-inf: unknown, or failed).
        self.fresh_as_of = -math.inf
        #: After a failure, the checker does not try it again before this time.
        self.retry_at = 0.0


class ReadReplicas:
    """The streaming replicas of one primary, how fresh they are, and who wrote lately.

    :param primary: the primary database.
    :param urls: the replicas' URLs (each gets a pool with the primary's settings).
    :param max_lag: a replica serves only while it holds every commit
        acknowledged more than ``max_lag`` seconds ago.
    :param check_interval: seconds between two measures of every replica.
    :param retry_interval: seconds a failed replica is left alone.
    :param read_your_writes: seconds a caller's reads go to the primary after
        a write through this process (``0``: never).
    """

    def __init__(
        self,
        primary: PostgreSQLDatabase,
        urls: Sequence[str],
        *,
        max_lag: float,
        check_interval: float,
        retry_interval: float,
        read_your_writes: float,
    ) -> None:
        self.primary = primary
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self.read_your_writes = read_your_writes
        self.replicas = [
            Replica(
                PostgreSQLDatabase(
                    url,
                    pool_size=primary.pool_size,
                    pool_timeout=primary.pool_timeout,
                    connect_timeout=primary.connect_timeout,
                    statement_timeout_ms=primary.statement_timeout_ms,
                    replica_of=primary,
                )
            )
            for url in urls
        ]
        self.closed = False
        #: ``(monotonic time, primary WAL insert position)``, oldest first.
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        #: Caller -> monotonic time of their last write through this process.
        self._writes: dict[str | None, float] = {}
        self._writes_lock = threading.Lock()
        self._prune_at = 1024
        self._checker_pid = 0
        self._checker_lock = threading.Lock()
        self._stop = threading.Event()
        self._primary_answered = True

    # -- per request ---------------------------------------------------

    def pick(self) -> Replica | None:
        """A replica fresh enough to read from (at random), or None."""
        if self._checker_pid != os.getpid():
            self._start_checker()
        oldest = time.monotonic() - self.max_lag
        fresh = [replica for replica in self.replicas if replica.fresh_as_of >= oldest]
        return random.choice(fresh) if fresh else None

    def wrote(self, user_id: str | None) -> None:
        """Note that ``user_id`` (None: anonymous) just wrote through this process."""
        if not self.read_your_writes:
            return
        now = time.monotonic()
        with self._writes_lock:
            self._writes[user_id] = now
            if len(self._writes) >= self._prune_at:
                oldest = now - self.read_your_writes
                self._writes = {k: t for k, t in self._writes.items() if t >= oldest}
                self._prune_at = max(1024, 2 * len(self._writes))

    def wrote_recently(self, user_id: str | None) -> bool:
        """Whether ``user_id`` wrote through this process in the last ``read_your_writes`` s."""
        last = self._writes.get(user_id)
        return last is not None and time.monotonic() - last < self.read_your_writes

    def mark_down(self, replica: Replica, exc: BaseException) -> None:
        """Stop reading from ``replica`` until the checker finds it well again."""
        replica.fresh_as_of = -math.inf
        replica.retry_at = time.monotonic() + self.retry_interval
        logger.warning(
            "%s Reading from the primary; trying it again in %g s (storage.replica_retry_seconds).",
            str(exc),
            self.retry_interval,
        )

    # -- the checker ---------------------------------------------------

    def _start_checker(self) -> None:
        with self._checker_lock:
            if self._checker_pid == os.getpid() or self.closed:
                return
            self._checker_pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(
                target=_check_replicas,
                args=(weakref.ref(self), self._stop, self.check_interval),
                name=f"kiln PostgreSQL replicas of {self.primary.name}",
                daemon=True,
            ).start()

    def check(self) -> None:
        """Measure how fresh each replica is now (the checker thread calls this
        every ``check_interval``); probe failed replicas whose retry time came."""
        sampled = time.monotonic()
        primary = self.primary
        try:
            with primary.transaction() as conn:
                row = primary.execute(conn, "SELECT pg_current_wal_insert_lsn()::text").fetchone()
        except BackendError as exc:
            if self._primary_answered:
                logger.warning("Cannot measure the read replicas' lag: %s", str(exc))
            self._primary_answered = False
        else:
            self._primary_answered = True
            assert row is not None
            self._samples.append((sampled, parse_lsn(row[0])))
            # Older samples can no longer make a replica fresh enough.
            while self._samples[0][0] < sampled - self.max_lag:
                self._samples.popleft()
        for replica in sorted(self.replicas, key=lambda r: r.retry_at):
            if replica.retry_at > time.monotonic() or self.closed:
                continue
            self._measure(replica)

    def _measure(self, replica: Replica) -> None:
        database = replica.database
        started = time.monotonic()
        try:
            with database.transaction() as conn:
                row = database.execute(
                    conn, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
                ).fetchone()
        except BackendError as exc:
            self.mark_down(replica, exc)
            return
        assert row is not None
        if replica.retry_at:
            replica.retry_at = 0.0
            logger.warning("PostgreSQL read replica %s answers again.", database.name)
        in_recovery, replayed = row
        if not in_recovery:
            # Not a replica (any more): it holds what it holds, nothing is on its way.
            replica.fresh_as_of = started
            return
        position = parse_lsn(replayed)
        replica.fresh_as_of = next(
            (at for at, lsn in reversed(self._samples) if lsn <= position), -math.inf
        )

    def close(self) -> None:
        """Stop the checker and close the replicas' pools."""
        self.closed = True
        self._stop.set()
        for replica in self.replicas:
            replica.fresh_as_of = -math.inf
            replica.database.close()


def _check_replicas(ref: weakref.ref[ReadReplicas], stop: threading.Event, interval: float) -> None:
    """The checker thread: :meth:`ReadReplicas.check` until closed (or forgotten)."""
    while True:
        replicas = ref()
        if replicas is None or replicas.closed:
            return
        replicas.check()
        del replicas
        if stop.wait(interval):
            return


# -- settings ----------------------------------------------------------------


def _at_least(minimum: float) -> Any:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"

    return check


def _urls(value: list[Any]) -> str | None:
    if all(isinstance(url, str) and url for url in value):
        return None
    return "must be a list of PostgreSQL URLs (non-empty strings)"


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
            "cancels it and the request fails (503); 0: no limit. `kiln migrate` has none. "
            "A server silent for `storage.connect_timeout_seconds` more (hung) has the "
            "connection closed by kiln.",
            check_value=_at_least(0),
        ),
        Setting(
            "storage.read_urls",
            (list,),
            [],
            "PostgreSQL URLs of streaming replicas of `storage.url`: GET and HEAD requests "
            "read records from one of them (see docs/deployment.md, Read replicas); "
            "empty: none.",
            check_value=_urls,
        ),
        Setting(
            "storage.replica_max_lag_seconds",
            (int, float),
            2.0,
            "A read replica answers only while it holds every commit acknowledged more "
            "than this long ago; a replica further behind is bypassed.",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.replica_check_seconds",
            (int, float),
            0.5,
            "How often each process measures its read replicas' lag (one query on the "
            "primary and one per replica).",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.replica_retry_seconds",
            (int, float),
            5.0,
            "How long a read replica that failed is left alone before it is tried again "
            "(its reads go to the primary meanwhile).",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.read_your_writes_seconds",
            (int, float),
            5.0,
            "After a caller writes, their reads go to the primary for this long (per "
            "process; keep it above `storage.replica_max_lag_seconds`); 0: never.",
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


def replicas_for(config: Any, database: PostgreSQLDatabase) -> ReadReplicas | None:
    """Give ``database`` the read replicas of ``storage.read_urls`` (None when empty)."""
    urls = config.setting("storage.read_urls")
    if not urls:
        return None
    return database.use_replicas(
        urls,
        max_lag=float(config.setting("storage.replica_max_lag_seconds")),
        check_interval=float(config.setting("storage.replica_check_seconds")),
        retry_interval=float(config.setting("storage.replica_retry_seconds")),
        read_your_writes=float(config.setting("storage.read_your_writes_seconds")),
    )
