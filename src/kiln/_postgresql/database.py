"""The PostgreSQL database object: one pool per URL, its units of work, and
how driver errors leave.

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
pipeline (:meth:`~PostgreSQLDatabase.pipeline`) with the statement that
follows it.

:meth:`~PostgreSQLDatabase.snapshot` runs a block's reads in one ``REPEATABLE
READ, READ ONLY`` transaction, so a list's timestamp, records and count
describe one state; inside a unit of work that already writes it does
nothing.

Connections. The pool opens lazily (nothing connects before the first
query, so building an app or running ``kiln check`` needs no server), and
again in a forked child, which never touches its parent's connections.
Each connection gets ``connect_timeout`` and ``statement_timeout``
(``storage.connect_timeout_seconds``, ``storage.statement_timeout_ms``).
Before opening its pool, a process connects once on its own: a server that
refuses the URL for good -- the database or the role does not exist, the
password is wrong (:func:`refusal`) -- fails the query at once with that
reason in one sentence, where the pool would retry (and log each try) until
``storage.pool_timeout_seconds``. A server that is down or unreachable is
left to the pool, which keeps trying. How pooled connections are checked
and hung statements cut: :mod:`kiln._postgresql.health`.

Every driver error (:class:`psycopg.Error`, which includes the pool's
:class:`~psycopg_pool.PoolTimeout`) leaves as
:class:`~kiln.exceptions.BackendError`, which views answer with 503;
serialization failures and deadlocks as its subclass
:class:`~kiln.exceptions.TransientBackendError`, on which views run the
request again (``storage.transaction_retries``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from kiln._postgresql.health import HANG_MARGIN, RECONNECT_TIMEOUT, Monitor, usable
from kiln._postgresql.migrations import install_schema as _install_schema
from kiln._postgresql.migrations import installed_version as _installed_version
from kiln._postgresql.replicas import READ_METHODS, ReadReplicas, ReplicaUnavailable
from kiln.exceptions import BackendError, ConfigError, StartupError, TransientBackendError
from kiln.migrations import Migration

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

__all__ = ["INSTALL_MESSAGE", "Params", "PostgreSQLDatabase", "Statement", "describe", "refusal"]

logger = logging.getLogger("kiln.postgresql")

T = TypeVar("T")

#: What is missing when ``psycopg`` or ``psycopg_pool`` cannot be imported.
INSTALL_MESSAGE = (
    "The PostgreSQL backends need the psycopg 3 driver and psycopg_pool, which are not "
    "installed. Install them with `pip install 'kiln-framework[postgresql]'`."
)

Params = Mapping[str, Any] | Sequence[Any] | None
Statement = tuple[str, Params]

_BEGIN_WRITE = "BEGIN"
_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StartupError(INSTALL_MESSAGE) from exc


def _is_driver_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error)


def _endpoint(url: str) -> tuple[str, str]:
    """``(host:port, dbname)`` of ``url`` (libpq's defaults where absent)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or 5432
    return f"{host}:{port}", str(params.get("dbname") or params.get("user") or "")


def describe(url: str) -> str:
    """``host:port/dbname`` of ``url``, never its password (for messages and logs)."""
    where, dbname = _endpoint(url)
    return f"{where}/{dbname}"


#: Server messages (``lc_messages`` in English) refusing a connection for good,
#: and what to do about each; ``{name}`` is the quoted name, ``{where}`` host:port.
_REFUSALS = (
    (
        re.compile(r'FATAL: +database "(?P<name>[^"]*)" does not exist'),
        "PostgreSQL database `{name}` does not exist on {where}: create it with "
        "`createdb {name}`, then run `kiln migrate`.",
    ),
    (
        re.compile(r'FATAL: +role "(?P<name>[^"]*)" does not exist'),
        "PostgreSQL role `{name}` does not exist on {where}: create it with "
        "`createuser {name}`, or put another user in the database URL.",
    ),
    (
        re.compile(r'FATAL: +password authentication failed for user "(?P<name>[^"]*)"'),
        "PostgreSQL on {where} refused the password of user `{name}`: correct it in the "
        "database URL.",
    ),
    (
        re.compile(r"fe_sendauth: (?P<name>no password supplied)"),
        "PostgreSQL on {where} asks for a password and the database URL gives none: "
        "add it to the URL (postgresql://user:password@host/dbname).",
    ),
    (
        re.compile(r"FATAL: +(?P<name>no pg_hba\.conf entry for [^\n]*)"),
        "PostgreSQL on {where} refused the connection ({name}): allow it in the server's "
        "pg_hba.conf, or use another user or database in the URL.",
    ),
)


def refusal(exc: BaseException, url: str) -> str | None:
    """Why the server at ``url`` refuses every connection, in one sentence
    saying what to do, read from the error ``exc`` of a connection attempt; None
    when it is not such a refusal (a server that is down or unreachable may
    come back: the pool keeps trying)."""
    text = str(exc)
    for pattern, message in _REFUSALS:
        match = pattern.search(text)
        if match is not None:
            return message.format(name=match.group("name"), where=_endpoint(url)[0])
    return None


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
    #: Writes that answer nothing, sent with the next statement or the commit.
    deferred: list[Statement] = []  # a class default, only ever replaced (never appended to)
    #: The unit of work was committed early (:meth:`PostgreSQLDatabase.commit_with`).
    committed = False
    #: The read replica the storage reads from (:meth:`PostgreSQLDatabase.route`).
    replica: Any = None
    #: The resource whose reads must not be older than ``seen``.
    resource: str | None = None
    seen = 0
    #: Statements are not watched for hangs (``kiln migrate``).
    unwatched = False


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
        A round trip not answered within :meth:`hang_limit` has its connection
        closed by kiln (a hung server), and no request waits longer than that
        for a connection.
    :param replica_of: the primary this database is a read replica of.

    :raises StartupError: psycopg or psycopg_pool is not installed.
    :raises ConfigError: ``url`` is not a connection string.
    """

    #: The engine's name in :mod:`kiln.migrations`' folders.
    engine = "postgresql"

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
        #: What hears, when metrics are on (:class:`kiln.metrics.Metrics`), how
        #: long each connection took to get from the pool (``pool_wait(name,
        #: seconds)``) and where the reads of a safe request went
        #: (``routed("replica" | "primary" | "fallback")``).
        self.observer: Any = None
        self.closed = False
        self._unit = _UnitOfWork()
        #: Per thread: the connection of the statement it waits for, and when
        #: the monitor cuts it (:mod:`kiln._postgresql.health`).
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

        reason = refusal(exc, self.url)
        message = reason or f"PostgreSQL database {self.name} failed: {exc}"
        conflict = isinstance(exc, SerializationFailure | DeadlockDetected)
        if self.replica_of is not None:
            # On a replica, a serialization failure is a conflict with recovery:
            # not a reason to stop reading from it, but to read from the primary.
            return ReplicaUnavailable(
                reason or f"PostgreSQL read replica {self.name} failed: {exc}",
                original=exc,
                failed=not conflict,
            )
        if conflict:
            return TransientBackendError(message, original=exc)
        if isinstance(exc, PoolTimeout):
            message = (
                f"PostgreSQL database {self.name} gave no connection within "
                f"{min(self.pool_timeout, self.hang_limit()):g} s: the server is down or "
                "unreachable (the psycopg.pool log says why), or every pooled connection is busy "
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

    def _connect_once(self) -> None:
        """Connect, and close at once: raise the driver's error when the server
        refuses this URL for good (:func:`refusal`); anything else is the
        pool's to retry."""
        import psycopg

        try:
            psycopg.connect(self.url, **self._connection_kwargs()).close()
        except psycopg.OperationalError as exc:
            if refusal(exc, self.url) is not None:
                raise

    def pool(self) -> ConnectionPool[Connection[Any]]:
        """This process's pool, opened on first use, after one connection of
        its own (see the module docstring).

        :raises BackendError: the server refuses the URL for good, or the
            database is closed.
        """
        pool = self._pool
        if pool is not None and self._pid == os.getpid() and not self.closed:
            return pool
        import psycopg
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
                try:
                    self._connect_once()
                except psycopg.Error as exc:
                    raise self.error(exc) from exc
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
                Monitor.watch(self)
            return self._pool

    def hang_limit(self) -> float:
        """Seconds a round trip may go unanswered before its connection is cut:
        ``statement_timeout`` + :data:`~kiln._postgresql.health.HANG_MARGIN`,
        however many statements it carries (``inf`` without a statement timeout)."""
        if not self.statement_timeout_ms:
            return math.inf
        return self.statement_timeout_ms / 1000 + HANG_MARGIN

    def _checkout(self) -> Connection[Any]:
        import psycopg

        # On a hung server no connection opens: waiting for one is bound like a statement.
        started = time.monotonic()
        deadline = started + min(self.pool_timeout, self.hang_limit())
        try:
            pool = self.pool()
            while True:
                conn = pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
                if usable(conn):
                    observer = self.observer
                    if observer is not None:
                        observer.pool_wait(self.name, time.monotonic() - started)
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
        Monitor.forget(self)
        if pool is not None and self._pid == os.getpid():
            # Kept: connections still checked out are closed when put back.
            pool.close()

    def _watch(self, conn: Connection[Any]) -> int:
        """Note that this thread now waits on ``conn`` for one round trip; returns
        the key to drop from ``_in_flight`` when the wait is over."""
        key = threading.get_ident()
        deadline = math.inf
        if not self._unit.unwatched:
            deadline = time.monotonic() + self.hang_limit()
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
        if unit.committed:
            raise RuntimeError("This unit of work was committed: nothing more may be written.")
        if not unit.writing:
            unit.writing = True
            unit.pending = _BEGIN_WRITE

    def in_unit_of_work(self) -> bool:
        """Whether this thread is inside a :meth:`transaction` block."""
        return self._unit.depth > 0

    def defer(self, conn: Connection[Any], *statements: Statement) -> None:
        """Write ``statements`` -- which answer nothing -- in the current unit of
        work, without a round trip: they travel with the next statement, or
        with the commit (so errors they raise surface there)."""
        self.begin_write(conn)
        unit = self._unit
        unit.deferred = [*unit.deferred, *statements]

    def commit_with(self, conn: Connection[Any], *statements: Statement) -> list[Cursor[Any]]:
        """Run ``statements``, then commit the unit of work, in one round trip.

        The unit of work is over: nothing more may be written in it, and its
        end commits nothing more. A unit that wrote nothing else and has one
        statement runs it alone (its own transaction, no ``BEGIN``).
        """
        unit = self._unit
        if unit.depth == 0:
            raise RuntimeError("commit_with() needs an open transaction().")
        if len(statements) == 1 and not unit.open and not unit.deferred and not unit.reading:
            unit.pending = None
            cursors = [self.execute(conn, *statements[0])]
        else:
            if not unit.writing:
                self.begin_write(conn)
            cursors = self.pipeline(conn, *statements, ("COMMIT", None))[:-1]
        unit.committed = True
        unit.open = False
        return cursors

    def execute(self, conn: Connection[Any], query: str, params: Params = None) -> Cursor[Any]:
        """Run ``query`` on ``conn`` (with the pending ``BEGIN`` and deferred writes, if any)."""
        unit = self._unit
        if unit.pending is not None or unit.deferred:
            return self.pipeline(conn, (query, params))[0]
        key = self._watch(conn)
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
        deferred, unit.deferred = unit.deferred, []
        key = self._watch(conn)
        try:
            with conn.pipeline():
                if begin is not None:
                    unit.open = True
                    conn.execute(begin)
                for query, params in deferred:
                    conn.execute(query, params)
                return [conn.execute(query, params) for query, params in statements]
        finally:
            self._in_flight.pop(key, None)

    def _end(self, *, commit: bool) -> None:
        unit = self._unit
        conn, opened, deferred = unit.conn, unit.open, unit.deferred
        unit.conn = None
        unit.writing = unit.reading = unit.open = unit.committed = False
        try:
            if commit and (opened or deferred):
                self._commit(conn)  # the deferred writes (and the BEGIN) travel with it
            elif opened:
                unit.pending, unit.deferred = None, []  # never sent: nothing to undo
                self._rollback(conn)
        finally:
            unit.pending = None
            unit.deferred = []
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
        replica when it may; see :mod:`kiln._postgresql.replicas`.

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
        observer = self.observer
        unit = self._unit
        replica = None
        if not (if_match or unit.depth or replicas.wrote_recently(user_id)):
            replica = replicas.pick()
        if replica is None:
            if observer is not None:
                observer.routed("primary")
            return work()
        unit.replica, unit.resource, unit.seen = replica.database, resource_name, seen or 0
        try:
            rv = work()
        except ReplicaUnavailable as exc:
            if exc.failed:
                replicas.mark_down(replica, exc)
            else:
                logger.debug("%s Reading from the primary.", str(exc))
        else:
            if observer is not None:
                observer.routed("replica")
            return rv
        finally:
            unit.replica, unit.resource, unit.seen = None, None, 0
        if observer is not None:
            observer.routed("fallback")
        return work()

    # -- schema --------------------------------------------------------

    def install_schema(
        self, component: str, migrations: Sequence[Migration], *, dry_run: bool = False
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
        return _install_schema(self, component, migrations, dry_run=dry_run)

    def installed_version(self, conn: Connection[Any], component: str) -> int | None:
        """The schema version recorded for ``component``, or None."""
        return _installed_version(self, conn, component)

    @contextlib.contextmanager
    def unwatched(self) -> Iterator[None]:
        """This thread's statements in the block are not watched for hangs
        (:mod:`kiln._postgresql.health`): ``kiln migrate``'s may run long."""
        unit = self._unit
        unwatched, unit.unwatched = unit.unwatched, True
        try:
            yield
        finally:
            unit.unwatched = unwatched
