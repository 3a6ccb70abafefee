"""The protocol's semantics over a storage backend, sans-IO.

:class:`Model` turns protocol operations (list, create, get, replace,
patch, delete) into storage calls, with Cliquet's rules and kiln's
concurrency guarantees: preconditions (``If-Match`` / ``If-None-Match``)
checked atomically with the write, ``POST`` of an existing id answering the
existing record, ``PUT`` creating or replacing, ``PATCH`` in its three
media types, read-only and unique fields, and the resource's
``process_record`` hook.

Reads go to the storage at once; writes are staged in the model's
:class:`~kiln.resource.unit_of_work.UnitOfWork` and made at its flush
(ARCHITECTURE D14): each write carries what the model read (the record's
``last_modified``, or no record), and the flush makes it only if that still
holds. The records the methods return get their ``last_modified`` at the
flush.

Inputs and outputs are plain values: records (dicts), timestamps (ints),
:class:`Preconditions`; protocol errors are :class:`kiln.errors.HTTPError`.
Nothing here touches Flask.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import jsonpatch

from kiln._json import apply_json_patch, check_record
from kiln.errors import ERRORS, HTTPError
from kiln.resource.query import (
    DELETED_FIELD,
    ID_FIELD,
    MODIFIED_FIELD,
    PROCESS_TOKEN_KEY,
    RESERVED_FIELDS,
    Query,
    QueryError,
    encode_token,
    pagination_context,
)
from kiln.resource.schema import Schema
from kiln.resource.unit_of_work import EventSource, UnitOfWork
from kiln.storage import (
    ABSENT,
    LIVE,
    Filter,
    Operator,
    RecordNotFoundError,
    StorageBase,
    Write,
    keyset_rules,
)
from kiln.storage._python_filters import MISSING, get_path, json_equal

__all__ = [
    "Change",
    "Model",
    "NotModified",
    "Page",
    "Preconditions",
    "apply_patch",
]

Record = dict[str, Any]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class NotModified(Exception):  # a 304 is not an error, hence no Error suffix
    """``If-None-Match`` matched: answer 304 with this timestamp as ETag."""

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp
        super().__init__(timestamp)


@dataclass(frozen=True)
class Preconditions:
    """The request's ``If-Match`` / ``If-None-Match``, parsed.

    ``if_match`` is a timestamp; ``if_none_match`` is a timestamp or ``"*"``.
    """

    if_match: int | None = None
    if_none_match: int | str | None = None


@dataclass(frozen=True)
class Change:
    """One write, for events: ``action`` is ``create``, ``update`` or ``delete``.

    ``new`` is the stored record (the tombstone of a delete); ``old`` what
    it replaced (``None`` for a create).
    """

    action: str
    new: Record
    old: Record | None


@dataclass
class Page:
    """One page of a collection."""

    records: list[Record]
    timestamp: int
    next_token: str | None = None


@dataclass
class Model:
    """A resource's collection ``(resource_name, parent_id)`` in ``storage``."""

    storage: StorageBase
    resource_name: str
    parent_id: str
    schema: Schema
    id_generator: Callable[[], str]
    id_pattern: re.Pattern[str]
    unique_fields: tuple[str, ...] = ()
    readonly_fields: tuple[str, ...] = ()
    process_record: Callable[[Record, Record | None], Record] | None = None
    #: Filters every list, count and collection delete also applies (the
    #: records the caller may see), outside what ``_token`` is bound to.
    scope: tuple[Filter, ...] = ()
    #: Where the writes are staged; by default a unit of the model's own
    #: that makes each write at once (tests, scripts).
    unit: UnitOfWork | None = None
    #: The event payload of the request (``uri``, ``user_id``, path variables).
    payload: dict[str, Any] = field(default_factory=dict)
    #: The largest record a patch may make, in bytes of JSON (``None``: no
    #: limit): ``request.max_body_bytes``, as for a record sent whole.
    max_record_bytes: int | None = None
    #: The key ``Next-Page`` tokens are sealed with (:func:`~kiln.resource.query.token_key`).
    token_key: bytes = PROCESS_TOKEN_KEY

    def __post_init__(self) -> None:
        if self.unit is None:
            self.unit = UnitOfWork(self.storage, None, immediate=True)
        self._source = EventSource(self.resource_name, self.parent_id, self.payload)

    @property
    def changes(self) -> list[Change]:
        """The changes of this collection the unit of work has made so far."""
        return [change for source, change in self._unit.changes if source == self._source]

    @property
    def _unit(self) -> UnitOfWork:
        assert self.unit is not None  # set by __post_init__
        return self.unit

    def _read(self, object_id: str | None = None) -> StorageBase:
        """The storage, once the unit's writes to this collection (or only to
        record ``object_id``) are made."""
        self._unit.reading(self.resource_name, self.parent_id, object_id)
        return self.storage

    def snapshot(self) -> Any:
        """:meth:`StorageBase.snapshot <kiln.storage.StorageBase.snapshot>`, once the
        unit's writes to this collection are made (no write may happen inside)."""
        return self._read().snapshot()

    def _stage(self, write: Write, result: Record, change: Change) -> Record:
        self._unit.stage(write, result, change, self._source)
        return result

    # -- reading --------------------------------------------------------

    def timestamp(self) -> int:
        return self._read().collection_timestamp(self.resource_name, self.parent_id)

    def check_collection(self, preconditions: Preconditions) -> int:
        """Collection-level preconditions; returns the collection timestamp."""
        current = self.timestamp()
        self._check_timestamp(current, preconditions)
        return current

    @staticmethod
    def _check_timestamp(current: int, preconditions: Preconditions) -> None:
        if isinstance(preconditions.if_none_match, int) and current <= preconditions.if_none_match:
            raise NotModified(current)
        if preconditions.if_match is not None and preconditions.if_match != current:
            raise _modified_meanwhile(None)

    def page(self, query: Query, preconditions: Preconditions = Preconditions()) -> Page:
        """A page of records, honouring filters, sort, limit and ``_token``.

        The records and the collection timestamp are read together (one
        statement where the backend can), then the preconditions are checked
        on that timestamp.
        """
        context = pagination_context(
            self.resource_name, self.parent_id, query.filters, query.sorting
        )
        rules: list[list[Filter]] = []
        if query.token is not None:
            if query.token["ctx"] != context:
                raise QueryError(
                    "_token",
                    "was issued for another collection, filter or sort; start again without it.",
                )
            rules = keyset_rules(query.sorting, query.token["last"])
        limit = query.limit
        records, timestamp = self._read().list_page(
            self.resource_name,
            self.parent_id,
            filters=query.filters + self.scope,
            sorting=query.sorting,
            pagination_rules=rules,
            limit=None if limit is None else limit + 1,
            include_deleted=query.include_deleted,
        )
        self._check_timestamp(timestamp, preconditions)
        next_token = None
        if limit is not None and len(records) > limit:
            records = records[:limit]
            next_token = encode_token(records[-1], query.sorting, context, self.token_key)
        return Page(records, timestamp, next_token)

    def count(self, query: Query) -> int:
        """How many live records match the query's filters."""
        return self._read().count_all(
            self.resource_name, self.parent_id, filters=query.filters + self.scope
        )

    def get(self, object_id: str, preconditions: Preconditions = Preconditions()) -> Record:
        """The record, after its preconditions.

        :raises HTTPError: 404 (errno 110) when absent; 412 on ``If-Match``.
        :raises NotModified: ``If-None-Match`` matches.
        """
        self.check_id(object_id)
        record = self._existing(object_id)
        if record is None:
            if preconditions.if_match is not None:
                raise _modified_meanwhile(None)
            raise _not_found(object_id)
        match = preconditions.if_none_match
        if match == "*" or (isinstance(match, int) and record[MODIFIED_FIELD] <= match):
            raise NotModified(record[MODIFIED_FIELD])
        if preconditions.if_match is not None and preconditions.if_match != record[MODIFIED_FIELD]:
            raise _modified_meanwhile(record)
        return record

    def check_id(self, object_id: str) -> None:
        """400 when ``object_id`` is not an id this resource generates."""
        if not isinstance(object_id, str) or not self.id_pattern.match(object_id):
            raise HTTPError(
                400,
                ERRORS.INVALID_PARAMETERS,
                "Invalid record id.",
                details=[{"location": "path", "name": "id", "description": "Invalid record id."}],
            )

    def find(self, object_id: str) -> Record | None:
        """The live record ``object_id``, or ``None``."""
        return self._existing(object_id)

    def _existing(self, object_id: str) -> Record | None:
        found, record = self._unit.take_prefetched((self.resource_name, self.parent_id, object_id))
        if found:
            return record
        try:
            return self._read(object_id).get(self.resource_name, self.parent_id, object_id)
        except RecordNotFoundError:
            return None

    # -- writing ----------------------------------------------------------

    def validate(self, data: Mapping[str, Any]) -> None:
        """400 (errno 107) with every schema error."""
        details = self.schema.validate(data)
        if details:
            first = details[0]
            raise HTTPError(
                400,
                ERRORS.INVALID_PARAMETERS,
                f"{first['name']} in {first['location']}: {first['description']}",
                details=details,
            )

    def _prepare(self, new: Record, old: Record | None) -> Record:
        self.validate(new)
        if old is not None:
            for name in self.readonly_fields:
                if new.get(name) != old.get(name):
                    raise HTTPError(
                        400,
                        ERRORS.INVALID_PARAMETERS,
                        f"Cannot modify {name}.",
                        details=[
                            {
                                "location": "body",
                                "name": f"data.{name}",
                                "description": "This field is read-only.",
                            }
                        ],
                    )
        if self.process_record is not None:
            new = self.process_record(new, old)
        return new

    def _unique_holder(self, record: Record, object_id: str | None) -> tuple[str, Record] | None:
        """``(field, holder)``: another live record holding a value of one of the
        unique fields ``record`` has, if any (the flush checks it again)."""
        for name in self.unique_fields:
            value = get_path(record, name)
            if value is MISSING or value is None:
                continue
            filters = [Filter(name, value, Operator.EQ)]
            if object_id is not None:
                filters.append(Filter(ID_FIELD, object_id, Operator.NOT))
            found = self._read().list_all(
                self.resource_name, self.parent_id, filters=filters, limit=1
            )
            if found:
                return name, found[0]
        return None

    def _write(self, object_id: str, new: Record, existing: Record | None) -> Write:
        """The staged create (``existing`` None) or update of ``object_id`` to ``new``."""
        forced = new.pop(MODIFIED_FIELD, None)
        return Write(
            self.resource_name,
            self.parent_id,
            object_id,
            new,
            ABSENT if existing is None else existing[MODIFIED_FIELD],
            self.unique_fields,
            forced if isinstance(forced, int) and not isinstance(forced, bool) else None,
        )

    def create(
        self, data: Record, preconditions: Preconditions = Preconditions()
    ) -> tuple[Record, bool]:
        """``POST`` on the collection: ``(record, created)``.

        An ``id`` that exists, or a unique field already held, answers the
        existing record with ``created=False`` (no overwrite).
        """
        object_id = data.get(ID_FIELD)
        existing = None
        if object_id is not None:
            self.check_id(object_id)
            existing = self._existing(object_id)
            if preconditions.if_none_match == "*" and existing is not None:
                raise _modified_meanwhile(existing)
            if preconditions.if_match is not None:
                current = existing[MODIFIED_FIELD] if existing else self.timestamp()
                if current != preconditions.if_match:
                    raise _modified_meanwhile(existing)
        elif preconditions.if_match is not None:
            self.check_collection(Preconditions(if_match=preconditions.if_match))
        if existing is not None:
            return existing, False
        new = self._prepare(_without_meta(data, keep_modified=True), None)
        held = self._unique_holder(new, object_id)
        if held is not None:
            if preconditions.if_none_match == "*":
                raise _modified_meanwhile(held[1])
            return held[1], False
        if object_id is None:
            object_id = self.id_generator()
        write = self._write(object_id, new, None)
        record = {**new, ID_FIELD: object_id, MODIFIED_FIELD: 0}
        return self._stage(write, record, Change("create", record, None)), True

    def replace(
        self, object_id: str, data: Record, preconditions: Preconditions = Preconditions()
    ) -> tuple[Record, bool]:
        """``PUT`` on a record: ``(record, created)``; a tombstone is re-created."""
        self.check_id(object_id)
        if ID_FIELD in data and data[ID_FIELD] != object_id:
            raise _id_mismatch()
        existing = self._existing(object_id)
        if preconditions.if_none_match == "*" and existing is not None:
            raise _modified_meanwhile(existing)
        if preconditions.if_match is not None and (
            existing is None or existing[MODIFIED_FIELD] != preconditions.if_match
        ):
            raise _modified_meanwhile(existing)
        new = self._prepare(_without_meta(data, keep_modified=True), existing)
        self._refuse_held(new, object_id)
        write = self._write(object_id, new, existing)
        record = {**new, ID_FIELD: object_id, MODIFIED_FIELD: 0}
        if existing is None:
            return self._stage(write, record, Change("create", record, None)), True
        return self._stage(write, record, Change("update", record, existing)), False

    def _refuse_held(self, new: Record, object_id: str) -> None:
        """409 when another record holds one of ``new``'s unique values."""
        held = self._unique_holder(new, object_id)
        if held is not None:
            name, holder = held
            raise HTTPError(
                409,
                ERRORS.CONSTRAINT_VIOLATED,
                f"Conflict of field {name} on record {holder.get(ID_FIELD)}",
                details={"field": name, "existing": holder},
            )

    def patch(
        self,
        object_id: str,
        body: Any,
        media_type: str = JSON,
        preconditions: Preconditions = Preconditions(),
    ) -> tuple[Record, Record]:
        """``PATCH`` on a record: ``(record, old)``.

        Nothing is written (and the timestamp stays) when the patch changes
        nothing. A patched record nested deeper than a body may be answers
        400, one larger than :attr:`max_record_bytes` 413.
        """
        self.check_id(object_id)
        existing = self._existing(object_id)
        if existing is None:
            if preconditions.if_match is not None:
                raise _modified_meanwhile(None)
            raise _not_found(object_id)
        if preconditions.if_match is not None and (
            existing[MODIFIED_FIELD] != preconditions.if_match
        ):
            raise _modified_meanwhile(existing)
        merged = apply_patch(existing, body, media_type, self.max_record_bytes)
        if ID_FIELD in merged and merged[ID_FIELD] != object_id:
            raise _id_mismatch()
        merged[ID_FIELD] = object_id
        # JSON equality, not Python's: 1 -> true is a change (True == 1 in Python).
        if json_equal(_without_meta(merged), _without_meta(existing)):
            return existing, existing
        check_record(merged, self.max_record_bytes)
        # keep_modified: a later forced last_modified is kept (replication);
        # the storage ignores one that is not later than the record's.
        new = self._prepare(_without_meta(merged, keep_modified=True), existing)
        self._refuse_held(new, object_id)
        write = self._write(object_id, new, existing)
        record = {**new, ID_FIELD: object_id, MODIFIED_FIELD: 0}
        return self._stage(write, record, Change("update", record, existing)), existing

    def delete(
        self,
        object_id: str,
        preconditions: Preconditions = Preconditions(),
        last_modified: int | None = None,
    ) -> Record:
        """``DELETE`` on a record: its tombstone.

        When the unit of work allows it (:attr:`UnitOfWork.blind_deletes`), the
        record is not read first: the delete expects a live record (or the
        ``If-Match`` timestamp) and the flush checks it; a failure answers 404
        (or 412) then.
        """
        self.check_id(object_id)
        if self._unit.blind_deletes and last_modified is None:
            return self._bury_unread(object_id, preconditions)
        existing = self._existing(object_id)
        if existing is None:
            if preconditions.if_match is not None:
                raise _modified_meanwhile(None)
            raise _not_found(object_id)
        if (
            preconditions.if_match is not None
            and existing[MODIFIED_FIELD] != preconditions.if_match
        ):
            raise _modified_meanwhile(existing)
        return self._bury(existing, last_modified)

    def delete_descendants(self, parent_ids: list[str]) -> list[tuple[str, str, str]]:
        """Stage the delete of every live record below the objects ``parent_ids``
        name (their URIs: the ``parent_id`` of the collections nested below
        them), in any resource: a cascade. Returns their keys
        ``(resource_name, parent_id, id)``.

        One read (:meth:`~kiln.storage.StorageBase.list_descendants`); each
        delete expects the record ``LIVE`` and joins the unit's flush, with a
        tombstone. The children send no events of their own.
        """
        unit = self._unit
        unit.reading_below(parent_ids)
        keys = self.storage.list_descendants(parent_ids)
        for resource_name, parent_id, object_id in keys:
            write = Write(resource_name, parent_id, object_id, None, LIVE)
            tombstone = {ID_FIELD: object_id, MODIFIED_FIELD: 0, DELETED_FIELD: True}
            unit.stage(write, tombstone, Change("delete", tombstone, None), None)
        return keys

    def _bury_unread(self, object_id: str, preconditions: Preconditions) -> Record:
        if_match = preconditions.if_match
        write = Write(
            self.resource_name,
            self.parent_id,
            object_id,
            None,
            LIVE if if_match is None else if_match,
        )

        def failed() -> HTTPError:
            if if_match is None:
                return _not_found(object_id)
            return _modified_meanwhile(self._existing(object_id))

        tombstone = {ID_FIELD: object_id, MODIFIED_FIELD: 0, DELETED_FIELD: True}
        self._unit.stage(write, tombstone, Change("delete", tombstone, None), self._source, failed)
        return tombstone

    def _bury(self, existing: Record, last_modified: int | None = None) -> Record:
        object_id = existing[ID_FIELD]
        write = Write(
            self.resource_name,
            self.parent_id,
            object_id,
            None,
            existing[MODIFIED_FIELD],
            forced=last_modified,
        )
        tombstone = {ID_FIELD: object_id, MODIFIED_FIELD: 0, DELETED_FIELD: True}
        return self._stage(write, tombstone, Change("delete", tombstone, existing))

    def delete_all(
        self, query: Query, preconditions: Preconditions = Preconditions()
    ) -> list[Record]:
        """``DELETE`` on the collection: tombstones of the matching records."""
        self.check_collection(Preconditions(if_match=preconditions.if_match))
        doomed = self._read().list_all(
            self.resource_name,
            self.parent_id,
            filters=[*query.filters, *self.scope],
            sorting=query.sorting,
        )
        return [self._bury(record) for record in doomed]


def _without_meta(record: Mapping[str, Any], *, keep_modified: bool = False) -> Record:
    kept = {MODIFIED_FIELD} if keep_modified else set()
    return {k: v for k, v in record.items() if k not in RESERVED_FIELDS or k in kept}


def apply_patch(
    existing: Record, body: Any, media_type: str, max_bytes: int | None = None
) -> Record:
    """``existing`` with ``body`` applied in ``media_type``'s semantics.

    - ``application/json``: each top-level key replaces the stored value
      (Cliquet's PATCH);
    - ``application/merge-patch+json``: RFC 7396 (``null`` removes);
    - ``application/json-patch+json``: RFC 6902 operations whose paths
      start with ``/data``, whose ``copy`` operations may not grow the
      record past ``max_bytes`` (see :func:`kiln._json.apply_json_patch`).

    :raises HTTPError: 400 for a patch that does not apply; 413 for copies
        past ``max_bytes``.
    """
    if media_type == JSON_PATCH:
        return _json_patch(existing, body, max_bytes)
    if not isinstance(body, dict):
        raise _bad_body("data must be an object.")
    if media_type == MERGE_PATCH:
        return cast(Record, _merge_patch(existing, body))
    return {**copy.deepcopy(existing), **copy.deepcopy(body)}


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(existing: Record, operations: Any, max_bytes: int | None) -> Record:
    if not isinstance(operations, list):
        raise _bad_body("A JSON Patch is a list of operations.")
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise _bad_body(f"Operation {index} is not an object.")
        for key in ("path", "from"):
            if key in operation and not (
                isinstance(operation[key], str)
                and (operation[key] == "/data" or operation[key].startswith("/data/"))
            ):
                raise _bad_body(f"Operation {index}: {key} must start with /data.")
    document = {"data": copy.deepcopy(existing)}
    try:
        patched: dict[str, Any] = apply_json_patch(document, operations, max_bytes)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise _bad_body(f"The JSON Patch does not apply: {exc}") from None
    data = patched.get("data")
    if not isinstance(data, dict):
        raise _bad_body("data must stay an object.")
    return data


def response_data(behavior: str, record: Record, body: Mapping[str, Any], old: Record) -> Record:
    """The record as ``Response-Behavior`` asks: ``full``, ``light`` or ``diff``.

    ``light``: the fields the client sent in ``body``; ``diff``: those of
    them whose stored value differs from what the client sent (the server
    changed them, in ``process_record`` for instance). Fields the client did
    not send are never part of ``light`` or ``diff`` (Cliquet's rule).
    """
    if behavior == "light":
        return {k: record[k] for k in body if k in record}
    if behavior == "diff":
        return {k: record[k] for k in body if k in record and not json_equal(body[k], record[k])}
    return record


def _modified_meanwhile(existing: Record | None) -> HTTPError:
    details = {"existing": existing} if existing is not None else {}
    return HTTPError(
        412, ERRORS.MODIFIED_MEANWHILE, "Resource was modified meanwhile.", details=details
    )


def _not_found(object_id: str) -> HTTPError:
    return HTTPError(
        404,
        ERRORS.INVALID_RESOURCE_ID,
        "The resource you are looking for could not be found.",
        details={"id": object_id},
    )


def _id_mismatch() -> HTTPError:
    return HTTPError(
        400,
        ERRORS.INVALID_PARAMETERS,
        "Record id does not match existing record.",
        details=[{"location": "body", "name": "data.id", "description": "Does not match the URL."}],
    )


def _bad_body(message: str) -> HTTPError:
    return HTTPError(
        400,
        ERRORS.INVALID_PARAMETERS,
        message,
        details=[{"location": "body", "name": "data", "description": message}],
    )
