"""A request's unit of work: reads go out at once, writes wait for one flush.

A request (or a whole batch) is one unit of work (ARCHITECTURE D10): one
transaction of the storage and permission backends, committed when the
request succeeds and rolled back when it fails. Within it, **no lock is
held across Python work** (D14):

- reads (a record, a page, permissions) go to the backends as they are
  made, and take no lock;
- writes are *staged*: the model computes every record, checks every
  precondition and permission against what it read, and stages a
  :class:`~kiln.storage.Write` that says what it expects to find (the
  record's ``last_modified``, or no record);
- at the end, :meth:`UnitOfWork.flush` hands everything to the backends at
  once: the permission changes, then the writes (:meth:`StorageBase.apply
  <kiln.storage.StorageBase.apply>`), with the commit. The collection locks
  that make timestamps follow commit order are held while the database
  runs those statements, not while Python builds a response or another
  thread holds the GIL.

A write whose expectation no longer holds at the flush (another request
changed the record meanwhile) raises :class:`~kiln.storage.WriteConflict`:
nothing is applied, and :func:`run` runs the whole unit again, which now
reads the new state (and answers ``412`` if an ``If-Match`` no longer
matches). A read of a collection (or of permissions) with staged writes
flushes them first, so a unit always reads its own writes: this only
happens in a batch that reads what an earlier sub-request wrote (a record
read flushes only when that record has staged writes).

Events: each staged write carries its :class:`~kiln.resource.model.Change`;
the changes that were applied become :class:`~kiln.resource.events.ResourceChanged`
events once the unit committed.

Sans-IO: this module talks to backends, never to HTTP.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import TransientBackendError
from kiln.resource.events import ResourceChanged
from kiln.storage import Record, StorageBase, Write, WriteConflict

if TYPE_CHECKING:
    from kiln.permission import PermissionBase
    from kiln.resource.model import Change

__all__ = [
    "CONFLICT_ATTEMPTS",
    "EventSource",
    "ReplacePermissions",
    "UnitOfWork",
    "current_unit",
    "run",
    "using",
]

logger = logging.getLogger("kiln.resource")

T = TypeVar("T")

#: Runs of a unit of work whose writes keep conflicting before answering 409.
CONFLICT_ATTEMPTS = 20


@dataclass(frozen=True)
class ReplacePermissions:
    """A permission change setting some permissions of one object
    (:meth:`~kiln.permission.PermissionBase.replace_object_permissions`): the
    flush writes a run of them with one call."""

    object_id: str
    permissions: Mapping[str, set[str]]


#: A staged permission change: a replacement, or any call on the backend.
PermissionChange = ReplacePermissions | Callable[["PermissionBase"], None]


class EventSource(NamedTuple):
    """Where a change happened, as its event reports it: the collection and
    the request's event payload (``uri``, ``user_id``, path variables...)."""

    resource_name: str
    parent_id: str
    payload: Mapping[str, Any]


@dataclass
class _Staged:
    write: Write
    #: The record (or tombstone) the request answers with; ``last_modified`` is
    #: filled in at the flush.
    result: Record
    source: EventSource | None
    change: Change
    #: For a write made without reading first: the answer when it finds the
    #: record other than expected (instead of running the unit again).
    on_conflict: Callable[[], HTTPError] | None = None


class UnitOfWork:
    """What one request (or batch) reads and writes, on ``storage`` and ``permission``.

    Use it inside :func:`run`, which opens the backends' transactions,
    flushes and commits, and runs the unit again after a conflict.
    ``immediate``: flush every write as it is staged (a model used on its
    own, in tests or scripts; :class:`~kiln.storage.WriteConflict` then
    leaves the model's method).
    """

    def __init__(
        self,
        storage: StorageBase | None,
        permission: PermissionBase | None,
        *,
        immediate: bool = False,
        blind_deletes: bool = False,
    ) -> None:
        self.storage = storage
        self.permission = permission
        self.immediate = immediate
        #: Deletes may be staged without reading the record first (a request
        #: alone, whose events need no deleted record): their failure answers
        #: the request (404, 412) rather than running it again. A flush that
        #: conflicts leaves nothing behind on every backend (see :meth:`flush`).
        self.blind_deletes = blind_deletes
        #: The writes of the flush under way, to explain a conflict.
        self._flushing: list[_Staged] = []
        self._writes: list[_Staged] = []
        self._permission_changes: list[tuple[frozenset[str], PermissionChange]] = []
        self._dirty: set[tuple[str, str]] = set()
        self._dirty_records: set[tuple[str, str, str]] = set()
        self._dirty_objects: set[str] = set()
        #: How many flushes reached the backends.
        self.flushes = 0
        self._flushed_writes = 0
        self._flushed_changes = 0
        #: The applied changes, for events.
        self.changes: list[tuple[EventSource | None, Change]] = []
        #: What the unit's requests remember (the parents found, ...).
        self.memo: dict[Any, Any] = {}
        #: Answers read from the permission backend, with the objects each depends on.
        self._permission_memo: dict[Any, tuple[Any, frozenset[str]]] = {}
        #: Records read ahead with others (a request's parents), until taken.
        self._prefetched: dict[tuple[str, str, str], Record | None] = {}

    # -- reading ----------------------------------------------------------

    def reading(self, resource_name: str, parent_id: str, object_id: str | None = None) -> None:
        """Before reading collection ``(resource_name, parent_id)`` -- or only its
        record ``object_id`` -- flush the staged writes the read must see."""
        if (resource_name, parent_id) not in self._dirty:
            return
        if object_id is None or (resource_name, parent_id, object_id) in self._dirty_records:
            self.flush()

    def prefetch(self, key: tuple[str, str, str], record: Record | None) -> None:
        """Keep ``record`` (``None``: there is none), read ahead, for the first
        :meth:`take_prefetched` of ``key`` -- unless a write to it is staged first."""
        self._prefetched[key] = record

    def take_prefetched(self, key: tuple[str, str, str]) -> tuple[bool, Record | None]:
        """``(True, record)`` when ``key`` was read ahead (then forgotten), else
        ``(False, None)``."""
        if key in self._prefetched:
            return True, self._prefetched.pop(key)
        return False, None

    def reading_permissions(self, object_ids: Iterable[str] | None = None) -> None:
        """Before reading the permissions of ``object_ids`` (``None``: any): flush
        staged permission changes that touch them."""
        if not self._dirty_objects:
            return
        if object_ids is None or not self._dirty_objects.isdisjoint(object_ids):
            self.flush()

    def remembered(self, key: Any, default: Any = None) -> Any:
        """An answer of the permission backend :meth:`remember` kept, or ``default``."""
        found = self._permission_memo.get(key)
        return default if found is None else found[0]

    def remember(self, key: Any, answer: Any, object_ids: Iterable[str]) -> None:
        """Keep ``answer``, read from the ACEs of ``object_ids``, until a change
        to one of them is staged: the unit's other requests (a batch's) reuse it."""
        self._permission_memo[key] = (answer, frozenset(object_ids))

    # -- writing ----------------------------------------------------------

    def stage(
        self,
        write: Write,
        result: Record,
        change: Change,
        source: EventSource | None,
        on_conflict: Callable[[], HTTPError] | None = None,
    ) -> None:
        """Stage ``write``; ``result`` gets its ``last_modified`` at the flush.

        ``on_conflict``: the error to answer when the write finds the record
        other than expected (a write made without reading first).
        """
        self._writes.append(_Staged(write, result, source, change, on_conflict))
        self._prefetched.pop((write.resource_name, write.parent_id, write.object_id), None)
        self._dirty.add((write.resource_name, write.parent_id))
        self._dirty_records.add((write.resource_name, write.parent_id, write.object_id))
        if self.immediate:
            self.flush()

    def stage_permissions(self, object_ids: Iterable[str], change: PermissionChange) -> None:
        """Stage ``change(permission_backend)``, which writes the ACEs of ``object_ids``."""
        touched = frozenset(object_ids)
        self._permission_changes.append((touched, change))
        self._dirty_objects |= touched
        memo = self._permission_memo
        for key in [key for key, (_, on) in memo.items() if not on.isdisjoint(touched)]:
            del memo[key]
        if self.immediate:
            self.flush()

    @property
    def pending(self) -> bool:
        """Whether anything is staged."""
        return bool(self._writes or self._permission_changes)

    # -- batch sub-requests -------------------------------------------------

    def mark(self) -> tuple[int, int]:
        """A point :meth:`discard` can go back to (before a batch sub-request)."""
        return (
            self._flushed_writes + len(self._writes),
            self._flushed_changes + len(self._permission_changes),
        )

    def discard(self, mark: tuple[int, int]) -> None:
        """Forget what was staged since ``mark`` (a sub-request that failed).

        :raises RuntimeError: something staged since ``mark`` was flushed.
            Requests read before they write, so a sub-request never flushes
            its own writes; this is a bug if it happens.
        """
        writes, changes = mark
        if self._flushed_writes > writes or self._flushed_changes > changes:
            raise RuntimeError("A failed sub-request's writes were flushed; it cannot be undone.")
        del self._writes[writes - self._flushed_writes :]
        del self._permission_changes[changes - self._flushed_changes :]
        self._dirty = {(s.write.resource_name, s.write.parent_id) for s in self._writes}
        self._dirty_records = {
            (s.write.resource_name, s.write.parent_id, s.write.object_id) for s in self._writes
        }
        self._dirty_objects = set().union(*(ids for ids, _ in self._permission_changes))

    # -- flushing -----------------------------------------------------------

    def flush(self, *, commit: bool = False) -> None:
        """Send what is staged: the permission changes, then the writes -- or,
        when the permission backend has no transactions (Redis), the writes
        first, so that a conflicting flush leaves no permission change behind.

        ``commit``: this is the end of the unit of work (see
        :meth:`StorageBase.apply <kiln.storage.StorageBase.apply>`).

        :raises WriteConflict: a write did not find what it expected.
        """
        changes, self._permission_changes = self._permission_changes, []
        staged, self._writes = self._writes, []
        self._flushed_changes += len(changes)
        self._flushed_writes += len(staged)
        self._dirty.clear()
        self._dirty_records.clear()
        self._dirty_objects.clear()
        if not (changes or staged):
            return
        self.flushes += 1
        permission = self.permission
        # A transaction takes permission changes back with a conflicting write;
        # there, they go first (PostgreSQL: deferred, they travel with the writes).
        late = permission is not None and not permission.supports_transactions
        if changes and not late:
            assert permission is not None  # only shareable resources stage any
            _change_permissions(permission, [change for _, change in changes])
        if staged:
            assert self.storage is not None  # only models stage writes, on their storage
            self._flushing = staged
            timestamps = self.storage.apply([s.write for s in staged], commit=commit)
            for entry, timestamp in zip(staged, timestamps, strict=True):
                entry.result["last_modified"] = timestamp
            self.changes.extend((entry.source, entry.change) for entry in staged)
        if changes and late:
            assert permission is not None
            _change_permissions(permission, [change for _, change in changes])

    def explain(self, conflict: WriteConflict) -> HTTPError | None:
        """The answer a failed write made without reading first asks for, if it is one."""
        if 0 <= conflict.index < len(self._flushing):
            on_conflict = self._flushing[conflict.index].on_conflict
            if on_conflict is not None:
                return on_conflict()
        return None

    # -- events ---------------------------------------------------------------

    def events(self) -> list[ResourceChanged]:
        """The applied changes as events: one per ``(resource, parent, action)``."""
        merged: dict[tuple[str, str, str], ResourceChanged] = {}
        for source, change in self.changes:
            if source is None:
                continue
            name = source.resource_name
            key = (name, source.parent_id, change.action)
            event = merged.get(key)
            if event is None:
                event = merged[key] = ResourceChanged({**source.payload, "action": change.action})
            else:
                event.payload.pop(f"{name}_id", None)
                event.payload["uri"] = source.payload["collection_uri"]
            impacted: dict[str, Any] = {"new": change.new}
            if change.old is not None:
                impacted["old"] = change.old
            event.impacted_records.append(impacted)
            event.payload["timestamp"] = max(
                event.payload.get("timestamp", 0), change.new["last_modified"]
            )
        for event in merged.values():
            event.payload.pop("collection_uri", None)
        return list(merged.values())


#: The unit of work a batch is running its sub-requests in, if any.
_current: contextvars.ContextVar[UnitOfWork | None] = contextvars.ContextVar(
    "kiln_unit_of_work", default=None
)


def current_unit() -> UnitOfWork | None:
    """The unit of work of the batch whose sub-request is being served, if any.

    A request served inside one (through Flask, by a batch) joins it rather
    than running a unit of its own.
    """
    return _current.get()


@contextlib.contextmanager
def using(unit: UnitOfWork) -> Iterator[UnitOfWork]:
    """Make ``unit`` the :func:`current_unit` inside the block."""
    token = _current.set(unit)
    try:
        yield unit
    finally:
        _current.reset(token)


def run(
    storage: StorageBase,
    permission: PermissionBase | None,
    work: Callable[[UnitOfWork], T],
    *,
    transient_retries: int,
    notify: Callable[[list[ResourceChanged]], None] | None = None,
    blind_deletes: bool = False,
) -> T:
    """``work(unit)`` in one unit of work, flushed and committed; its result.

    The unit runs again, from the start, when the database aborts it as
    conflicting with another transaction (:class:`~kiln.exceptions.TransientBackendError`:
    up to ``transient_retries`` more times, then the error leaves) or when
    a write finds the record changed since it was read
    (:class:`~kiln.storage.WriteConflict`: up to :data:`CONFLICT_ATTEMPTS`
    runs, then ``409``) -- after a short random pause, and only when nothing
    of it can have been applied (a backend without transactions keeps what
    an earlier flush wrote). ``notify`` receives the events after the commit.
    ``blind_deletes``: see :attr:`UnitOfWork.blind_deletes`.
    """
    transient = 0
    conflicts = 0
    while True:
        unit = UnitOfWork(storage, permission, blind_deletes=blind_deletes)
        try:
            with storage.transaction(), _transaction(permission):
                result = work(unit)
                unit.flush(commit=True)
        except TransientBackendError:
            if transient >= transient_retries:
                raise
            transient += 1
            logger.info("Unit of work aborted by a conflict; running it again (%d).", transient)
        except WriteConflict as conflict:
            answer = unit.explain(conflict)
            if answer is not None:
                raise answer from None
            conflicts += 1
            if conflicts >= CONFLICT_ATTEMPTS or not _undone(storage, unit, conflict):
                raise HTTPError(
                    409,
                    ERRORS.CONSTRAINT_VIOLATED,
                    "The record kept changing while this request was applied; retry it.",
                ) from None
        else:
            if notify is not None:
                events = unit.events()
                if events:
                    notify(events)
            return result
        time.sleep(random.uniform(0, 0.001 * 2 ** min(transient + conflicts, 5)))


def _change_permissions(permission: PermissionBase, changes: list[PermissionChange]) -> None:
    """Make ``changes`` in order, each run of :class:`ReplacePermissions` with one call."""
    run: dict[str, dict[str, set[str]]] = {}
    for change in changes:
        if isinstance(change, ReplacePermissions):
            run.setdefault(change.object_id, {}).update(change.permissions)
            continue
        if run:
            permission.replace_objects_permissions(run)
            run = {}
        change(permission)
    if run:
        permission.replace_objects_permissions(run)


def _transaction(permission: PermissionBase | None) -> contextlib.AbstractContextManager[Any]:
    return permission.transaction() if permission is not None else contextlib.nullcontext()


def _undone(storage: StorageBase, unit: UnitOfWork, conflict: WriteConflict) -> bool:
    """Whether a unit that failed on ``conflict`` left no write behind (so it may run again).

    The flush that conflicted wrote nothing, whichever of its writes ``conflict``
    names: :meth:`~kiln.storage.StorageBase.apply` is all or nothing on every
    backend. Without transactions, an earlier flush of the unit (a batch that
    read its own writes) stays.
    """
    return storage.supports_transactions or unit.flushes == 1
