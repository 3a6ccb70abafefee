"""In-process storage: dicts, for tests and demos (lost when the process exits).

Reads see committed data only. A unit of work copies a collection the
first time it writes to it (copy-on-write) and publishes its copies when
it commits; a rollback just drops them. Writers are serialized by one
process-wide lock taken at a unit of work's first write and held until it
ends, so timestamps increase in commit order and ``if_match`` is a true
compare-and-swap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from kiln.storage import (
    Filter,
    PreconditionFailed,
    Record,
    RecordNotFoundError,
    Sort,
    StorageBase,
    UnicityError,
    is_below,
)
from kiln.storage._python_filters import MISSING, get_path, json_equal, select, sort_records

__all__ = ["MemoryStorage", "load"]

Key = tuple[str, str]


def _copy(record: Record) -> Record:
    rv: Record = orjson.loads(orjson.dumps(record))
    return rv


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _forced(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


class _Collection:
    """One collection's live records, tombstones and timestamp."""

    __slots__ = ("records", "timestamp", "tombstones")

    def __init__(
        self,
        records: dict[str, Record] | None = None,
        tombstones: dict[str, Record] | None = None,
        timestamp: int = 0,
    ) -> None:
        self.records = records if records is not None else {}
        self.tombstones = tombstones if tombstones is not None else {}
        self.timestamp = timestamp

    def copy(self) -> _Collection:
        return _Collection(dict(self.records), dict(self.tombstones), self.timestamp)

    def next_timestamp(self, forced: int | None = None, floor: int | None = None) -> int:
        """A timestamp for the next change; ``forced`` is kept when above ``floor``."""
        if forced is not None and forced > (self.timestamp if floor is None else floor):
            timestamp = forced
        else:
            timestamp = max(_now_ms(), self.timestamp + 1)
        self.timestamp = max(self.timestamp, timestamp)
        return timestamp


class _UnitOfWork(threading.local):
    depth = 0
    locked = False
    workspace: dict[Key, _Collection] | None = None


class MemoryStorage(StorageBase):
    """Storage in Python dicts. Reads no settings."""

    def __init__(self) -> None:
        self._published: dict[Key, _Collection] = {}
        self._write_lock = threading.RLock()
        self._unit = _UnitOfWork()

    # -- lifecycle -----------------------------------------------------

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        return []

    def flush(self) -> None:
        with self.transaction():
            workspace = self._lock()
            for key in self._published:
                workspace[key] = _Collection()
            for key in workspace:
                workspace[key] = _Collection()

    def heartbeat(self) -> bool:
        return True

    @contextmanager
    def transaction(self) -> Iterator[None]:
        unit = self._unit
        unit.depth += 1
        try:
            yield
        except BaseException:
            if unit.depth == 1:
                unit.workspace = None
            raise
        else:
            if unit.depth == 1 and unit.workspace is not None:
                self._published.update(unit.workspace)
        finally:
            unit.depth -= 1
            if unit.depth == 0:
                unit.workspace = None
                if unit.locked:
                    unit.locked = False
                    self._write_lock.release()

    def _lock(self) -> dict[Key, _Collection]:
        unit = self._unit
        if not unit.locked:
            self._write_lock.acquire()
            unit.locked = True
            unit.workspace = {}
        assert unit.workspace is not None
        return unit.workspace

    def _read(self, resource_name: str, parent_id: str) -> _Collection | None:
        key = (resource_name, parent_id)
        workspace = self._unit.workspace
        if workspace is not None and key in workspace:
            return workspace[key]
        return self._published.get(key)

    def _write(self, resource_name: str, parent_id: str) -> _Collection:
        """The collection to change, after taking the write lock (call within a transaction)."""
        workspace = self._lock()
        key = (resource_name, parent_id)
        collection = workspace.get(key)
        if collection is None:
            published = self._published.get(key)
            collection = published.copy() if published is not None else _Collection()
            workspace[key] = collection
        return collection

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        collection = self._read(resource_name, parent_id)
        return collection.timestamp if collection is not None else 0

    # -- single records ------------------------------------------------

    @staticmethod
    def _check_unique(
        collection: _Collection, record: Record, object_id: str, unique_fields: Sequence[str]
    ) -> None:
        for field in unique_fields:
            value = get_path(record, field)
            if value is MISSING or value is None:
                continue
            for other in collection.records.values():
                if other["id"] != object_id and json_equal(get_path(other, field), value):
                    raise UnicityError(field, _copy(other))

    @staticmethod
    def _store(collection: _Collection, object_id: str, record: Record, timestamp: int) -> Record:
        stored = _copy({k: v for k, v in record.items() if k not in ("id", "last_modified")})
        stored["id"] = object_id
        stored["last_modified"] = timestamp
        collection.tombstones.pop(object_id, None)
        collection.records[object_id] = stored
        return _copy(stored)

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
        with self.transaction():
            collection = self._write(resource_name, parent_id)
            existing = collection.records.get(object_id)
            if existing is not None:
                raise UnicityError("id", _copy(existing))
            self._check_unique(collection, record, object_id, unique_fields)
            timestamp = collection.next_timestamp(_forced(record.get("last_modified")))
            return self._store(collection, object_id, record, timestamp)

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        collection = self._read(resource_name, parent_id)
        record = collection.records.get(object_id) if collection is not None else None
        if record is None:
            raise RecordNotFoundError(object_id)
        return _copy(record)

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
        with self.transaction():
            collection = self._write(resource_name, parent_id)
            existing = collection.records.get(object_id)
            if if_match is not None and (existing is None or existing["last_modified"] != if_match):
                raise PreconditionFailed(_copy(existing) if existing is not None else None)
            self._check_unique(collection, record, object_id, unique_fields)
            floor = existing["last_modified"] if existing is not None else None
            timestamp = collection.next_timestamp(_forced(record.get("last_modified")), floor)
            return self._store(collection, object_id, record, timestamp)

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        with self.transaction():
            collection = self._write(resource_name, parent_id)
            existing = collection.records.get(object_id)
            if existing is None:
                if if_match is not None:
                    raise PreconditionFailed(None)
                raise RecordNotFoundError(object_id)
            if if_match is not None and existing["last_modified"] != if_match:
                raise PreconditionFailed(_copy(existing))
            return self._bury(collection, existing, _forced(last_modified))

    @staticmethod
    def _bury(collection: _Collection, existing: Record, forced: int | None) -> Record:
        object_id = existing["id"]
        timestamp = collection.next_timestamp(forced, existing["last_modified"])
        del collection.records[object_id]
        tombstone = {"id": object_id, "last_modified": timestamp, "deleted": True}
        collection.tombstones[object_id] = tombstone
        return dict(tombstone)

    # -- many records --------------------------------------------------

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
        collection = self._read(resource_name, parent_id)
        if collection is None:
            return []
        candidates = list(collection.records.values())
        if include_deleted:
            candidates.extend(collection.tombstones.values())
        found = select(candidates, filters, pagination_rules)
        sort_records(found, sorting)
        if limit is not None:
            found = found[: max(limit, 0)]
        return [_copy(record) for record in found]

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        collection = self._read(resource_name, parent_id)
        if collection is None:
            return 0
        return len(select(collection.records.values(), filters))

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        with self.transaction():
            collection = self._write(resource_name, parent_id)
            found = select(list(collection.records.values()), filters)
            sort_records(found, sorting)
            if limit is not None:
                found = found[: max(limit, 0)]
            return [self._bury(collection, record, None) for record in found]

    def list_descendants(self, parent_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        workspace = self._unit.workspace or {}
        keys = {*self._published, *workspace}
        found = []
        for resource_name, parent_id in sorted(keys):
            if not is_below(parent_id, parent_ids):
                continue
            collection = self._read(resource_name, parent_id)
            assert collection is not None  # listed above, never removed
            found += [(resource_name, parent_id, i) for i in sorted(collection.records)]
        return found

    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        with self.transaction():
            if self._read(resource_name, parent_id) is None:
                return 0
            collection = self._write(resource_name, parent_id)
            doomed = [
                object_id
                for object_id, tombstone in collection.tombstones.items()
                if before is None or tombstone["last_modified"] < before
            ]
            for object_id in doomed:
                del collection.tombstones[object_id]
            return len(doomed)


def load(config: Any) -> MemoryStorage:
    """The backend of ``storage.backend = "memory"`` (reads no other setting)."""
    return MemoryStorage()
