"""Connection health: pooled connections that died, statements that hang,
and the monitor thread that looks after both.

A pooled connection whose server went away (restart, failover,
``pg_terminate_backend``) is not handed out: an idle connection has nothing
to read, so when its socket is readable the server has said something --
usually goodbye -- and :meth:`psycopg_pool.ConnectionPool.check_connection`
decides (:func:`usable`); the dead connection is dropped and the next one
tried at once (the pool's own ``check`` callback would sleep a second
between two dead connections). A healthy connection costs one ``poll()``,
no round trip.

A server that stops answering (hung, overloaded, ``SIGSTOP``) cannot cancel
a statement it does not run, and TCP keepalives do not notice it: the
kernel still acknowledges. The :class:`Monitor` thread (one per process)
closes the socket (:func:`cut`) of every round trip still waiting
``statement_timeout`` plus :data:`HANG_MARGIN` after it was sent -- one
statement, or several pipelined together: the bound is the operator's
statement timeout, not a multiple of it -- so the request fails with
:class:`~kiln.exceptions.BackendError` instead of hanging its worker
(``kiln migrate``'s statements are not watched). Requests waiting for a
connection wait no longer than that either (:meth:`PostgreSQLDatabase.hang_limit
<kiln._postgresql.database.PostgreSQLDatabase.hang_limit>`): on a hung
server no connection opens. It
also nudges a pool that keeps requests waiting with no connection to offer
into connecting again: the pool's own retries back off, and a request
waiting for a server that just came back should not wait for the next one
(:data:`RECONNECT_TIMEOUT`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection

    from kiln._postgresql.database import PostgreSQLDatabase

__all__ = ["HANG_MARGIN", "MONITOR_PERIOD", "RECONNECT_TIMEOUT", "Monitor", "cut", "usable"]

logger = logging.getLogger("kiln.postgresql")

#: Seconds between two rounds of the monitor thread (hung statements, starved pools).
MONITOR_PERIOD = 0.2
#: Seconds a round trip may wait past ``statement_timeout`` before the monitor
#: cuts it: time for a healthy server's own cancellation to arrive, so only a
#: server that stopped answering loses its connection.
HANG_MARGIN = 0.5
#: Seconds the pool keeps retrying a connection that failed before giving up;
#: the next request (or the monitor) starts again at once. psycopg_pool's
#: default (5 minutes of doubling delays) could leave a pool idle for a minute
#: after its server came back.
RECONNECT_TIMEOUT = 0.5


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


def look_after(database: PostgreSQLDatabase) -> None:
    """One round of the monitor on ``database``: cut the connections of its
    statements past their deadline, and nudge its pool when requests wait
    with no connection to offer."""
    import psycopg

    now = time.monotonic()
    for conn, deadline in database._in_flight.copy().values():
        if deadline <= now:
            logger.warning(
                "PostgreSQL database %s did not answer within %g s "
                "(storage.statement_timeout_ms + %g s); closing its connection.",
                database.name,
                database.hang_limit(),
                HANG_MARGIN,
            )
            cut(conn)
    pool = database._pool
    assert pool is not None  # watched once its pool exists (in this process)
    stats = pool.get_stats()
    if stats.get("requests_waiting") and not stats.get("pool_available"):
        # Closed meanwhile: nothing to do.
        with contextlib.suppress(psycopg.Error):
            pool.check()  # grows the pool now if it is not already trying


class Monitor:
    """The thread of this process that looks after every open database
    (:func:`look_after`) each :data:`MONITOR_PERIOD`."""

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
                look_after(database)
            except Exception:  # pragma: no cover - a bug; the monitor must outlive it
                logger.exception("The PostgreSQL monitor failed on %s.", database.name)

    @classmethod
    def after_fork(cls) -> None:  # pragma: no cover - runs in forked children
        # The thread is not in the child, and the lock may have been held by it.
        cls.lock = threading.Lock()
        cls.databases = weakref.WeakSet()
        cls.pid = 0


if hasattr(os, "register_at_fork"):  # pragma: no branch - Windows has no fork
    os.register_at_fork(after_in_child=Monitor.after_fork)
