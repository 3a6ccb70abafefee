"""Read replicas of a PostgreSQL primary: which one may answer, and how fresh each is.

:meth:`~kiln._postgresql.PostgreSQLDatabase.use_replicas` gives a primary
its streaming replicas (``storage.read_urls``), a :class:`ReadReplicas`;
:meth:`~kiln._postgresql.PostgreSQLDatabase.route` runs a request's unit
of work with the storage's reads
(:meth:`~kiln._postgresql.PostgreSQLDatabase.reader`) on a replica when it
may: a ``GET`` or ``HEAD`` (:data:`READ_METHODS`) without ``If-Match``,
outside a unit of work already open (a batch reads from the primary), from
a caller who did not write through this process in the last
``storage.read_your_writes_seconds``, and while some replica is fresh
enough.

Freshness is measured without privileges or clocks: every
``storage.replica_check_seconds`` a checker thread notes the primary's WAL
insert position, then asks each replica how far it replayed; a replica
that replayed the position noted at time *t* holds every commit
acknowledged before *t*, and serves only while *t* is less than
``storage.replica_max_lag_seconds`` ago. A replica read older than what
the client says it has seen
(:meth:`~kiln._postgresql.PostgreSQLDatabase.require_fresh`), or a failing
replica (marked down for ``storage.replica_retry_seconds``), raises
:class:`ReplicaUnavailable` and the whole unit of work runs again on the
primary. The primary's unit of work (and its connection) is taken as
usual: permission reads and any write stay on the primary.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kiln.exceptions import BackendError

if TYPE_CHECKING:
    from kiln._postgresql.database import PostgreSQLDatabase

__all__ = ["READ_METHODS", "ReadReplicas", "Replica", "ReplicaUnavailable", "parse_lsn"]

logger = logging.getLogger("kiln.postgresql")

#: Methods a read replica may answer.
READ_METHODS = frozenset({"GET", "HEAD"})


def parse_lsn(text: str) -> int:
    """A ``pg_lsn`` (``16/B374D848``) as a number that orders as the WAL does."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class ReplicaUnavailable(BackendError):
    """A read replica cannot answer this request: it failed (``failed``), or
    it is behind what the request must see. The request runs again on the
    primary (:meth:`~kiln._postgresql.PostgreSQLDatabase.route`)."""

    def __init__(
        self, message: str, *, original: BaseException | None = None, failed: bool = True
    ) -> None:
        super().__init__(message, original=original)
        self.failed = failed


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
        # type(primary): the class of the database module, which imports this one.
        self.replicas = [
            Replica(
                type(primary)(
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
