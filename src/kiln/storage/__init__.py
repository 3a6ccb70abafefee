"""Storage backends: where resource records live.

One abstract base class, :class:`StorageBase`, whose docstrings are the
contract; implementations :mod:`kiln.storage.memory`,
:mod:`kiln.storage.sqlite`, :mod:`kiln.storage.postgresql` and
:mod:`kiln.storage.redis`; and the contract test suite
:mod:`kiln.storage.testing` that every implementation runs unchanged
(ARCHITECTURE D5).

Vocabulary
==========

- A **record** is a JSON object (``dict``) with two reserved fields set by
  the backend: ``id`` (string) and ``last_modified`` (integer, milliseconds
  since the epoch). A **tombstone** is what remains of a deleted record:
  ``{"id": ..., "last_modified": ..., "deleted": True}``.
- Records live in a **collection** named by ``(resource_name, parent_id)``:
  ``resource_name`` is the resource (``"mushroom"``), ``parent_id`` the
  owner or parent object (``""`` for a shared collection,
  ``"basicauth:abc"`` for a user's private one, ``"/buckets/b1"`` for a
  nested resource). Collections never see each other's records,
  tombstones, timestamps or pagination.
- Every collection has a **timestamp**: the ``last_modified`` of its latest
  change (record or tombstone). It strictly increases with each change, is
  unique within the collection, and increases in *commit* order.

Values and comparisons
======================

Field names in filters and sorts are dotted paths into the record
(``author.name``); ``id`` and ``last_modified`` address the reserved fields.
Values are JSON values. For **sorting** (and for the ``min``/``max``/
``gt``/``lt`` comparisons) values of different JSON types are ordered by
type, then by value within a type::

    null < false < true < numbers < strings < arrays < objects

and a **missing** field sorts after every value (ascending; first when
descending). Numbers compare numerically whatever their representation
(``1 == 1.0``); strings compare by code point. Ordering within arrays and
objects is backend-defined but consistent (memory and SQLite: by their
compact JSON text).

Where that total order applies to comparisons: ``LT GT MIN MAX`` inside
``filters`` (what users write) follow the table below and only match a
field of the value's type class, so ``gt_price=10`` never matches a string
or a missing price. Inside ``pagination_rules`` they compare on the total
sort order above (a missing field is greater than every value), which is
what keyset pagination over mixed types needs: build the rules with
:func:`keyset_rules`.

Filter operators (:class:`Operator`), a record matches when:

==============  ===============================================================
``EQ``          the field exists and equals the value (same type; ``1 == 1.0``)
``NOT``         the field is missing or differs from the value
``LT GT``       the field is of the value's type class (number/string) and ``<``/``>``;
                a value of another type (null, boolean, array, object) matches nothing
``MIN MAX``     likewise ``>=``/``<=``
``IN``          the field equals one of the values (a list)
``EXCLUDE``     the field is missing or equals none of the values
``HAS``         ``value`` truthy: the field exists (even ``null``); falsy: it is missing
``LIKE``        the field is a string matching the pattern, case-insensitively
                (``str.casefold``); ``*`` matches any run of characters; a
                pattern without ``*`` matches as a substring. Never a regular
                expression. A non-string pattern matches nothing.
``CONTAINS``    the field is an array containing every value of the list
``CONTAINS_ANY`` the field is an array containing at least one value of the list
==============  ===============================================================

``IN``, ``EXCLUDE``, ``CONTAINS`` and ``CONTAINS_ANY`` take a list; a
non-list value is read as a one-item list. Equality is JSON equality:
types must match (``true`` is not ``1``), numbers compare by value.

Filters combine with AND. ``pagination_rules`` is a list of filter lists:
a record must match at least one of them (OR of ANDs), which expresses
keyset pagination.

Concurrency
===========

Backends must make these hold, with real concurrent threads (and
processes where the backend is shared):

1. **No lost updates**: ``update``/``delete`` with ``if_match=ts`` succeed
   only if the stored record's ``last_modified`` is still ``ts`` at the
   moment of the write (compare-and-swap), else raise
   :class:`PreconditionFailed` carrying the current record.
2. **Safe creates**: ``create`` with an ``id`` that exists raises
   :class:`UnicityError`; N concurrent creates of one id: exactly one wins.
3. **Complete change feed**: timestamps increase in commit order within a
   collection, so a reader listing ``last_modified > t`` never misses a
   record committed later with a smaller timestamp.
4. **No spurious conflicts**: concurrent writers to a collection never get
   an error because two writes fell in the same millisecond.
5. **Reads never write**: :meth:`~StorageBase.collection_timestamp` of a
   never-written collection returns ``0`` without writing.

Transactions
============

:meth:`~StorageBase.transaction` is a context manager for one unit of
work (a request, a batch): every operation of the same thread inside it
joins it; it commits when the block exits normally and rolls back when it
raises. Nested calls join the outermost one (an exception caught between
a nested block and the outermost one undoes nothing by itself). Outside a
transaction each operation is its own unit of work. An operation that
raises one of the contract's errors (:class:`UnicityError`, ...) has
written nothing, so the unit of work may go on.

Loading
=======

:func:`load_storage` builds the backend named by ``storage.backend``
(``sqlite``, the default, ``postgresql``, ``memory`` or ``redis``) from
``storage.url``; see
``docs/storage.md``.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TypeVar

from kiln.exceptions import BackendError, KilnError, TransientBackendError

__all__ = [
    "ABSENT",
    "INDEX_TYPES",
    "LIVE",
    "MAX_FILTERS",
    "MAX_FILTER_VALUES",
    "MAX_SORT_FIELDS",
    "WRITE_ATTEMPTS",
    "AppliedWrites",
    "BackendError",
    "Filter",
    "Index",
    "IndexedField",
    "Operator",
    "PreconditionFailed",
    "RecordNotFoundError",
    "Sort",
    "StorageBase",
    "StorageError",
    "UnicityError",
    "Write",
    "WriteConflict",
    "check_writes",
    "is_below",
    "keyset_rules",
    "load_backend",
    "load_storage",
    "unknown_backend_message",
]

Record = dict[str, Any]
T = TypeVar("T")


#: The largest query every backend is tested to run (the storage contract's
#: ``test_the_largest_query_the_limits_allow_runs``): filters in one list,
#: values in one ``IN``/``EXCLUDE``/``CONTAINS``/``CONTAINS_ANY`` filter, sort
#: fields. Past them, engines fail in their own ways (SQLite's "Expression
#: tree is too large" near a thousand values or filters, PostgreSQL's "target
#: lists can have at most 1664 entries" near four hundred sort fields), so
#: the query parser refuses more (settings ``query.max_filters``,
#: ``query.max_filter_values``, ``query.max_sort_fields``, whose defaults
#: these are).
MAX_FILTERS = 50
MAX_FILTER_VALUES = 200
MAX_SORT_FIELDS = 20


class Operator(enum.StrEnum):
    """Filter operators; the value of each is its query-string prefix."""

    EQ = "eq"
    NOT = "not"
    LT = "lt"
    GT = "gt"
    MIN = "min"
    MAX = "max"
    IN = "in"
    EXCLUDE = "exclude"
    HAS = "has"
    LIKE = "like"
    CONTAINS = "contains"
    CONTAINS_ANY = "contains_any"


class Filter(NamedTuple):
    """``field <operator> value``; ``field`` is a dotted path, ``id`` or ``last_modified``."""

    field: str
    value: Any
    operator: Operator = Operator.EQ


class Sort(NamedTuple):
    """Order by ``field``: ``direction`` is ``1`` (ascending) or ``-1`` (descending)."""

    field: str
    direction: int


class StorageError(KilnError):
    """Base class of the storage contract's errors (not a backend failure)."""


class RecordNotFoundError(StorageError):
    """No live record has this id in this collection."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"Record {object_id!r} not found.")


class UnicityError(StorageError):
    """A create or update would break the unicity of ``field``.

    ``existing`` is the live record that already holds the value (for
    ``field == "id"``, the record with that id).
    """

    def __init__(self, field: str, existing: Record) -> None:
        self.field = field
        self.existing = existing
        super().__init__(f"Conflict of field {field} on record {existing.get('id')}.")


class PreconditionFailed(StorageError):
    """The record changed since the timestamp the caller expected.

    ``existing`` is the current record, or ``None`` when there is none
    (deleted, or never created).
    """

    def __init__(self, existing: Record | None) -> None:
        self.existing = existing
        super().__init__("Resource was modified meanwhile.")


class WriteConflict(StorageError):
    """A write of :meth:`StorageBase.apply` did not find what it expected.

    ``index`` is the write's position in the call (the first whose check
    failed). Nothing of that call was applied.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"Write {index} found the record changed meanwhile.")


#: :attr:`Write.expected` of a write that creates: no live record has the id.
ABSENT = -1
#: :attr:`Write.expected` of a delete made without reading the record first:
#: a live record, whatever its ``last_modified``.
LIVE = -2


class Write(NamedTuple):
    """One change :meth:`StorageBase.apply` makes, and what it expects to find.

    ``record`` is the new record (its ``id`` and ``last_modified`` are
    ignored); ``None`` deletes. ``expected`` is the ``last_modified`` the
    live record must still have, or :data:`ABSENT`: no live record holds the
    id (a tombstone may), or, for a delete only, :data:`LIVE`: a live record
    whatever its ``last_modified``. ``forced`` is a ``last_modified`` to keep
    (replication) when it is greater than ``expected`` -- or, when creating,
    than the collection's timestamp. No other live record of the collection
    may hold the same non-null value of one of ``unique_fields``.
    """

    resource_name: str
    parent_id: str
    object_id: str
    record: Record | None
    expected: int
    unique_fields: tuple[str, ...] = ()
    forced: int | None = None


#: JSON types an index may give a field (:class:`IndexedField`).
INDEX_TYPES = ("number", "integer", "boolean", "string")


class IndexedField(NamedTuple):
    """A top-level field of an :class:`Index`: its name, the one JSON type its
    values have (:data:`INDEX_TYPES`; a record may also lack it), and its
    direction (``1`` ascending, ``-1`` descending)."""

    field: str
    type: str
    direction: int = 1


class Index(NamedTuple):
    """An index a resource declares on its collections (``Resource.indexes``).

    Lists filtered on its first fields with ``=`` and sorted on the next ones
    (then on ``-last_modified``, ``id``) read it in order instead of sorting
    every matching record. ``fields`` also tells the backend the type of each
    field's values (the resource's schema guarantees it), so its filters and
    sorts compare them with that type's order, as the index does.
    """

    resource_name: str
    fields: tuple[IndexedField, ...]

    @property
    def name(self) -> str:
        """A name for the index: stable, readable, short enough for any engine."""
        import hashlib

        parts = "_".join(
            ("d" if f.direction < 0 else "a") + "".join(c for c in f.field if c.isalnum())[:12]
            for f in self.fields
        )
        digest = hashlib.sha1(repr(self).encode(), usedforsecurity=False).hexdigest()[:8]
        resource = "".join(c for c in self.resource_name if c.isalnum())[:16]
        return f"kiln_{resource}_{parts}"[:50] + f"_{digest}"


class StorageBase(abc.ABC):
    """The storage contract. Every method may raise :class:`BackendError`
    when the underlying engine fails (connection lost, disk full, ...).

    Records handed in are never mutated; records returned are fresh dicts
    the caller may mutate.
    """

    #: Capability flags; the contract suite skips tests of a missing capability.
    supports_transactions: bool = True

    # -- lifecycle -----------------------------------------------------

    @abc.abstractmethod
    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        """Create or upgrade what the backend needs; idempotent.

        Returns a description of each step done (or, with ``dry_run``, that
        would be done).
        """

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every record, tombstone and timestamp (tests)."""

    @abc.abstractmethod
    def heartbeat(self) -> bool:
        """Whether the backend answers (a cheap read); never raises."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and files. The default does nothing."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """One unit of work; see the module docstring.

        Commits when the block exits normally, rolls back when it raises.
        """

    def snapshot(self) -> AbstractContextManager[None]:
        """Reads inside the block see one consistent state (no writes inside).

        A collection's timestamp and its records read in one snapshot agree:
        the ``ETag`` of a list describes exactly its body. Inside a unit of
        work that already wrote, reads are consistent anyway and this does
        nothing. The default does nothing: for backends whose separate reads
        cannot interleave with a commit.
        """
        return contextlib.nullcontext()

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
        """Run ``work``, one request's whole unit of work, and return its result.

        A backend with read replicas may run the reads of a safe request on
        one (``method`` GET/HEAD, no ``If-Match``), unless ``user_id`` wrote
        recently or the client has seen a timestamp of ``resource_name``
        (``seen``) the replica does not have yet. The default runs ``work``
        as it is.
        """
        return work()

    # -- indexes --------------------------------------------------------

    def declare_indexes(self, indexes: Sequence[Index]) -> None:  # noqa: B027 - optional hook
        """The indexes the app's resources declare, before :meth:`initialize_schema`.

        A backend that supports them creates them with its schema
        (``kiln migrate``) and compiles filters and sorts on their fields to
        use them; the others ignore them (the default). Results never depend
        on it: only speed does.
        """

    # -- units of work -------------------------------------------------

    def apply(self, writes: Sequence[Write], *, commit: bool = False) -> list[int]:
        """Make ``writes``, in order, as one change; return each one's ``last_modified``.

        Each write checks ``expected`` and its ``unique_fields`` atomically
        with itself, and gets a timestamp as :meth:`create`, :meth:`update`
        and :meth:`delete` give: greater than every earlier one of its
        collection, in commit order. Inside :meth:`transaction`, the writes
        join its unit of work.

        ``commit``: the unit of work ends with these writes, so a backend may
        send its commit along with them (one round trip, the collection
        locks held only while the server runs them). Nothing may be done in
        the transaction afterwards.

        This implementation makes the writes one by one with
        :meth:`create`, :meth:`update` and :meth:`delete` in a
        :meth:`transaction`; backends override it to send them at once. A
        backend without transactions must override it: its ``apply`` is
        still all or nothing (the unit of work runs again after a conflict
        only because a conflicting ``apply`` wrote nothing).

        :raises WriteConflict: a write found the record other than expected,
            or a unique value held; nothing of this call is applied. Inside a
            :meth:`transaction`, the unit of work read something that changed
            since: roll it back (and run it again); a backend may refuse any
            further statement in it.
        """
        check_writes(writes)
        timestamps = []
        with self.transaction():
            for index, write in enumerate(writes):
                try:
                    stored = self._apply_one(write)
                except (PreconditionFailed, RecordNotFoundError, UnicityError) as exc:
                    raise WriteConflict(index) from exc
                timestamps.append(int(stored["last_modified"]))
        return timestamps

    def _apply_one(self, write: Write) -> Record:
        name, parent, object_id = write.resource_name, write.parent_id, write.object_id
        if write.record is None:
            if_match = None if write.expected == LIVE else write.expected
            return self.delete(
                name, parent, object_id, if_match=if_match, last_modified=write.forced
            )
        record = {k: v for k, v in write.record.items() if k not in ("id", "last_modified")}
        record["id"] = object_id
        if write.forced is not None:
            record["last_modified"] = write.forced
        if write.expected == ABSENT:
            return self.create(name, parent, record, unique_fields=write.unique_fields)
        return self.update(
            name,
            parent,
            object_id,
            record,
            if_match=write.expected,
            unique_fields=write.unique_fields,
        )

    # -- timestamps ----------------------------------------------------

    @abc.abstractmethod
    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        """The collection's current timestamp; ``0`` if never written. Never writes."""

    # -- single records ------------------------------------------------

    @staticmethod
    def new_id(record: Record, id_generator: Callable[[], str] | None) -> str:
        """The id :meth:`create` stores ``record`` under (see its docstring)."""
        if "id" in record:
            return str(record["id"])
        return id_generator() if id_generator is not None else str(uuid.uuid4())

    @abc.abstractmethod
    def create(
        self,
        resource_name: str,
        parent_id: str,
        record: Record,
        *,
        id_generator: Callable[[], str] | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        """Store a new record and return it with ``id`` and ``last_modified`` set.

        The id is ``record["id"]`` when present, else ``id_generator()``
        (a UUID4 string when no generator is given). A ``last_modified`` in
        ``record`` is kept when it is greater than the collection timestamp
        (replication), else a new timestamp is assigned. A tombstone with
        the same id is removed.

        :raises UnicityError: a live record has this id (``field == "id"``),
            or another live record holds the same non-null value of one of
            ``unique_fields``.
        """

    @abc.abstractmethod
    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        """The live record ``object_id``.

        :raises RecordNotFoundError: none, or only a tombstone.
        """

    def get_records(self, keys: Sequence[tuple[str, str, str]]) -> list[Record | None]:
        """The live record of each ``(resource_name, parent_id, object_id)`` of
        ``keys``, or ``None`` where there is none; in the order of ``keys``.

        This implementation calls :meth:`get` for each; backends override it
        to read them all at once.
        """
        found: list[Record | None] = []
        for resource_name, parent_id, object_id in keys:
            try:
                found.append(self.get(resource_name, parent_id, object_id))
            except RecordNotFoundError:
                found.append(None)
        return found

    @abc.abstractmethod
    def update(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        record: Record,
        *,
        if_match: int | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        """Replace (or create) record ``object_id`` with ``record``; return it.

        Upsert: a missing record (or a tombstone) is created. A new
        timestamp is assigned, unless ``record["last_modified"]`` is greater
        than the stored record's, in which case it is kept (replication).

        :raises PreconditionFailed: ``if_match`` is given and the stored live
            record's ``last_modified`` differs from it (or there is none),
            checked atomically with the write.
        :raises UnicityError: another live record holds a value of
            ``unique_fields``.
        """

    @abc.abstractmethod
    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        """Delete record ``object_id``, store its tombstone and return it.

        ``last_modified`` forces the tombstone's timestamp when it is greater
        than the record's (replication); otherwise a new one is assigned.

        :raises RecordNotFoundError: no live record.
        :raises PreconditionFailed: ``if_match`` differs from the record's
            ``last_modified`` (checked atomically with the write).
        """

    # -- many records --------------------------------------------------

    @abc.abstractmethod
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
        """Records matching every filter and at least one pagination rule.

        Ordered by ``sorting`` (the caller ends it with a unique field so the
        order is total); at most ``limit`` records. With
        ``include_deleted``, tombstones that match the filters are included
        (a tombstone has only ``id``, ``last_modified`` and ``deleted``, so
        filters on other fields see them as missing those fields).
        """

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
        """:meth:`list_all`, with the collection timestamp of the same state:
        ``(records, timestamp)`` read together (an ``ETag`` that describes the
        page exactly).

        This implementation reads both in one :meth:`snapshot`; backends
        override it to read both in one statement.
        """
        with self.snapshot():
            timestamp = self.collection_timestamp(resource_name, parent_id)
            records = self.list_all(
                resource_name,
                parent_id,
                filters=filters,
                sorting=sorting,
                pagination_rules=pagination_rules,
                limit=limit,
                include_deleted=include_deleted,
            )
        return records, timestamp

    @abc.abstractmethod
    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        """How many live records match every filter (tombstones excluded)."""

    @abc.abstractmethod
    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        """Delete the live records matching ``filters``; return their tombstones.

        Each deletion gets its own timestamp. ``sorting`` and ``limit``
        choose which records when ``limit`` is given.
        """

    @abc.abstractmethod
    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        """Drop tombstones with ``last_modified < before`` (all if None); return how many."""

    @abc.abstractmethod
    def list_descendants(self, parent_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(resource_name, parent_id, id)`` of every live record below the
        objects ``parent_ids`` name, in any resource: in a collection whose
        ``parent_id`` is one of them or starts with one of them followed by
        ``/`` (:func:`is_below`). Empty ids name nothing. One read, whatever
        the number of collections: deleting a parent stages a delete of each
        (expecting it ``LIVE``) in the same :meth:`apply` (a cascade).

        .. versionadded:: 0.1
        """


def is_below(parent_id: str, ancestors: Sequence[str]) -> bool:
    """Whether a collection of ``parent_id`` lies below one of ``ancestors``
    (object URIs): ``parent_id`` is one of them, or starts with one and ``/``."""
    return any(
        ancestor and (parent_id == ancestor or parent_id.startswith(ancestor + "/"))
        for ancestor in ancestors
    )


def check_writes(writes: Sequence[Write]) -> None:
    """Refuse what :meth:`StorageBase.apply` cannot mean: a delete expecting no record.

    :raises ValueError: with the reason.
    """
    for write in writes:
        if write.record is None and write.expected == ABSENT:
            raise ValueError("A delete expects the record's last_modified, not ABSENT.")
        if write.record is not None and write.expected == LIVE:
            raise ValueError("Only a delete may expect LIVE: a record to write expects more.")


#: Tries of a single write made with :meth:`StorageBase.apply` that keeps losing races.
WRITE_ATTEMPTS = 20


class AppliedWrites(StorageBase):
    """:meth:`create`, :meth:`update`, :meth:`delete` and :meth:`delete_all`
    made with :meth:`apply`, for backends whose one write primitive it is.

    Each reads what it checks (the record, the holders of unique values),
    raises the contract's errors from that, then makes one :meth:`apply` that
    expects what it read. A conflict there means another writer came between
    the read and the write: the write is tried again
    (:data:`WRITE_ATTEMPTS` times at most), or, when the backend's
    transaction cannot go on after a conflict (:meth:`_conflict_ends_unit`),
    :class:`~kiln.exceptions.TransientBackendError` asks for the whole unit
    of work to run again.
    """

    @abc.abstractmethod
    def apply(self, writes: Sequence[Write], *, commit: bool = False) -> list[int]:
        """See :meth:`StorageBase.apply`."""

    def _conflict_ends_unit(self) -> bool:
        """Whether a :class:`WriteConflict` now leaves the current transaction
        unusable (the caller must roll it back). The default: no."""
        return False

    def _live(self, resource_name: str, parent_id: str, object_id: str) -> Record | None:
        try:
            return self.get(resource_name, parent_id, object_id)
        except RecordNotFoundError:
            return None

    def _held(self, write: Write) -> UnicityError | None:
        """The unicity error ``write`` runs into, if another record holds one of its values."""
        from kiln.storage._python_filters import MISSING, get_path

        assert write.record is not None
        for name in write.unique_fields:
            value = get_path(write.record, name)
            if value is MISSING or value is None:
                continue
            holders = self.list_all(
                write.resource_name,
                write.parent_id,
                filters=[Filter(name, value), Filter("id", write.object_id, Operator.NOT)],
                limit=1,
            )
            if holders:
                return UnicityError(name, holders[0])
        return None

    def _apply_single(self, write: Write) -> int | None:
        """``apply([write])``: its timestamp, or ``None`` after a conflict to try again.

        :raises TransientBackendError: the conflict ended the unit of work.
        """
        try:
            (timestamp,) = self.apply([write])
        except WriteConflict:
            if self._conflict_ends_unit():
                raise self._kept_changing() from None
            return None
        return timestamp

    @staticmethod
    def _kept_changing() -> TransientBackendError:
        return TransientBackendError("The record changed while it was written; run it again.")

    @staticmethod
    def _stored(object_id: str, record: Record, timestamp: int) -> Record:
        stored = {k: v for k, v in record.items() if k not in ("id", "last_modified")}
        stored["id"] = object_id
        stored["last_modified"] = timestamp
        return stored

    def create(
        self,
        resource_name: str,
        parent_id: str,
        record: Record,
        *,
        id_generator: Callable[[], str] | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        object_id = self.new_id(record, id_generator)
        write = Write(
            resource_name,
            parent_id,
            object_id,
            record,
            ABSENT,
            tuple(unique_fields),
            _forced(record.get("last_modified")),
        )
        for _ in range(WRITE_ATTEMPTS):
            if "id" in record:  # a generated id is new: nothing to read
                existing = self._live(resource_name, parent_id, object_id)
                if existing is not None:
                    raise UnicityError("id", existing)
            held = self._held(write) if unique_fields else None
            if held is not None:
                raise held
            timestamp = self._apply_single(write)
            if timestamp is not None:
                return self._stored(object_id, record, timestamp)
        raise self._kept_changing()

    def update(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        record: Record,
        *,
        if_match: int | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        forced = _forced(record.get("last_modified"))
        for _ in range(WRITE_ATTEMPTS):
            current = self._live(resource_name, parent_id, object_id)
            if if_match is not None and (current is None or current["last_modified"] != if_match):
                raise PreconditionFailed(current)
            expected = ABSENT if current is None else int(current["last_modified"])
            write = Write(
                resource_name, parent_id, object_id, record, expected, tuple(unique_fields), forced
            )
            held = self._held(write) if unique_fields else None
            if held is not None:
                raise held
            timestamp = self._apply_single(write)
            if timestamp is not None:
                return self._stored(object_id, record, timestamp)
        raise self._kept_changing()

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        for _ in range(WRITE_ATTEMPTS):
            current = self._live(resource_name, parent_id, object_id)
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(None)
                raise RecordNotFoundError(object_id)
            if if_match is not None and current["last_modified"] != if_match:
                raise PreconditionFailed(current)
            expected = int(current["last_modified"])
            write = Write(resource_name, parent_id, object_id, None, expected, (), last_modified)
            timestamp = self._apply_single(write)
            if timestamp is not None:
                return {"id": object_id, "last_modified": timestamp, "deleted": True}
        raise self._kept_changing()

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        for _ in range(WRITE_ATTEMPTS):
            doomed = self.list_all(
                resource_name, parent_id, filters=filters, sorting=sorting, limit=limit
            )
            if not doomed:
                return []
            writes = [
                Write(resource_name, parent_id, record["id"], None, record["last_modified"])
                for record in doomed
            ]
            try:
                timestamps = self.apply(writes)
            except WriteConflict:
                if self._conflict_ends_unit():
                    raise self._kept_changing() from None
                continue
            return [
                {"id": record["id"], "last_modified": timestamp, "deleted": True}
                for record, timestamp in zip(doomed, timestamps, strict=True)
            ]
        raise self._kept_changing()


def _forced(value: Any) -> int | None:
    """A record's ``last_modified``, as a timestamp to keep (replication), if it is one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def keyset_rules(sorting: Sequence[Sort], last_record: Record) -> list[list[Filter]]:
    """The ``pagination_rules`` selecting what comes after ``last_record``.

    ``sorting`` must end with a unique field (``id`` or ``last_modified``)
    so the order is total; ``last_record`` holds the last record of the
    previous page (at least its sort fields; a field the record lacks is
    *missing* and must be absent from the dict, not ``None``). The rules are
    Cliquet's: an OR over k of ``f1..fk-1`` equal to the last values and
    ``fk`` after it, "after" being ``GT`` ascending and ``LT`` descending
    on the total sort order. A missing value is matched with ``HAS False``;
    nothing sorts after a missing value ascending, everything present does
    descending. ::

        rules = keyset_rules([Sort("title", 1), Sort("id", 1)], page[-1])
        storage.list_all("book", "", sorting=..., pagination_rules=rules, limit=20)
    """
    from kiln.storage._python_filters import MISSING, get_path

    rules: list[list[Filter]] = []
    prefix: list[Filter] = []
    for sort in sorting:
        value = get_path(last_record, sort.field)
        if sort.direction >= 0:
            if value is not MISSING:
                rules.append([*prefix, Filter(sort.field, value, Operator.GT)])
        elif value is MISSING:
            rules.append([*prefix, Filter(sort.field, True, Operator.HAS)])
        else:
            rules.append([*prefix, Filter(sort.field, value, Operator.LT)])
        if value is MISSING:
            prefix.append(Filter(sort.field, False, Operator.HAS))
        else:
            prefix.append(Filter(sort.field, value, Operator.EQ))
    return rules


# -- loading -----------------------------------------------------------------

#: Backends this release ships, and those announced for a later one.
AVAILABLE_BACKENDS = ("memory", "sqlite", "postgresql", "redis")
LATER_BACKENDS: tuple[str, ...] = ()


def unknown_backend_message(key: str, name: object, available: Sequence[str]) -> str:
    """The sentence for a ``*.backend`` setting naming no shipped backend."""
    import difflib

    listed = ", ".join(available)
    if name in LATER_BACKENDS:
        return f"{key} {name!r} arrives in a later release. Available: {listed}."
    message = f"{key} {name!r} is not known."
    guesses = difflib.get_close_matches(str(name).lower(), [*available, *LATER_BACKENDS], 1, 0.6)
    if guesses:
        message += f" Did you mean {guesses[0]!r}?"
        if guesses[0] in LATER_BACKENDS:
            message += f" ({guesses[0]!r} arrives in a later release.)"
    return f"{message} Available: {listed}."


def _register_settings() -> None:
    from kiln.config import Setting, register_setting

    for setting in (
        Setting(
            "storage.backend",
            (str,),
            "sqlite",
            "Storage backend: `sqlite` (one local file), `postgresql` (a PostgreSQL "
            "database), `redis` (a Redis server) or `memory` (tests; lost on exit).",
        ),
        Setting(
            "storage.url",
            (str,),
            "kiln.sqlite",
            "SQLite database file (relative to the working directory), or `:memory:`; "
            "with `storage.backend = postgresql`, a PostgreSQL URL "
            "(`postgresql://user:password@host:5432/dbname`); "
            "with `storage.backend = redis`, a Redis URL (`redis://host:6379/0`).",
        ),
        Setting(
            "storage.transaction_retries",
            (int,),
            3,
            "How many times a request (or batch) the database aborted as conflicting with "
            "another (serialization failure, deadlock) runs again before answering 503.",
        ),
        Setting(
            "storage.initialize_on_startup",
            (bool,),
            True,
            "Create or upgrade the storage schema when the app starts (embedded use).",
        ),
        Setting(
            "storage.busy_timeout_seconds",
            (int, float),
            5.0,
            "How long a SQLite writer waits for the write lock before failing (503).",
        ),
    ):
        register_setting(setting)


_register_settings()


def load_storage(config: Any) -> StorageBase:
    """Build the storage backend configured in ``config`` (a
    :class:`kiln.config.Configuration`).

    The schema is not created here: call
    :meth:`StorageBase.initialize_schema` (``kiln migrate``) once.

    :raises kiln.exceptions.ConfigError: ``storage.backend`` is unknown.
    :raises BackendError: the database cannot be opened.
    """
    backend: StorageBase = load_backend("storage", config.setting("storage.backend"), config)
    return backend


def load_backend(kind: str, name: Any, config: Any) -> Any:
    """The ``kind`` backend (``storage``, ``cache``, ``permission``) named ``name``.

    Each implementation is the module ``kiln.<kind>.<name>``, whose
    ``load(config)`` builds it from ``config``.

    :raises kiln.exceptions.ConfigError: ``name`` is not a shipped backend.
    """
    import importlib

    from kiln.exceptions import ConfigError

    if name not in AVAILABLE_BACKENDS:
        raise ConfigError(unknown_backend_message(f"{kind}.backend", name, AVAILABLE_BACKENDS))
    return importlib.import_module(f"kiln.{kind}.{name}").load(config)
