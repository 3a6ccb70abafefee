"""Storage in Redis (redis-py + hiredis): every write is one atomic Lua script.

Layout, per collection (``<r>`` and ``<p>`` are the resource name and the
parent id, percent-encoded by :func:`kiln._redis.encode_key_part`, so no
name can contain the ``:`` separator or act as a glob)::

    kiln:storage:<r>:<p>:records   HASH  id -> the record's JSON, ending with "last_modified":<ms>}
    kiln:storage:<r>:<p>:deleted   ZSET  id -> the tombstone's last_modified (score)
    kiln:storage:<r>:<p>:meta      HASH  timestamp -> collection timestamp,
                                         version -> count of writes (optimistic checks)

Writes. ``create``/``update``, ``delete`` and ``delete_all`` each run one Lua
script (``EVALSHA``; Redis runs a script alone), which checks ``if_match``
or the id's existence, takes the next timestamp ``max(now, current + 1)``
from the server's clock (``TIME``) and writes, all at once. So a compare
and its swap cannot be separated, N concurrent creates of one id have one
winner, and timestamps increase in commit order across every process
using the server. Unicity of ``unique_fields`` (JSON equality over the
collection) is checked in Python on a consistent read of the collection,
then the write script runs only if the collection's ``version`` is still
the one read (else the write is tried again, at most :data:`MAX_ATTEMPTS`
times); ``delete_all`` picks its records the same way.

Reads. ``list_all`` and ``count_all`` load the collection (``HGETALL``, and
the tombstones) in one ``MULTI``/``EXEC`` and filter, sort and page in
Python with :mod:`kiln.storage._python_filters`, the memory backend's code:
the cost of a list is proportional to the collection, not to the page.

Limits. No transactions: Redis cannot roll back a sequence of scripts, so
:meth:`RedisStorage.transaction` groups nothing and
``supports_transactions`` is ``False`` (a failing request or batch keeps
the writes it made before failing). Forced timestamps (replication) must be
below ``2**53`` (they are scores and Lua numbers); larger ones are ignored
like stale ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from kiln._redis import RedisBackend, RedisConnection, connection_from_config, encode_key_part
from kiln.exceptions import BackendError
from kiln.storage import (
    Filter,
    PreconditionFailed,
    Record,
    RecordNotFoundError,
    Sort,
    StorageBase,
    UnicityError,
)
from kiln.storage._python_filters import MISSING, get_path, json_equal, select, sort_records

__all__ = ["RedisStorage", "load"]

NAMESPACE = "kiln:storage:"
#: Tries of a write whose optimistic check keeps losing to concurrent writers.
MAX_ATTEMPTS = 50
#: Forced timestamps must be below this (exact as a double).
TIMESTAMP_LIMIT = 2**53

_LUA_COMMON = """
local records, deleted, meta = KEYS[1], KEYS[2], KEYS[3]

local function fmt(n)
  return string.format('%.0f', n)
end

-- Every stored body ends with "last_modified":<digits>} (see _body_prefix).
local function stamp_of(body)
  return tonumber(string.match(body, '(%d+)}$'))
end

-- A forced timestamp is kept when above floor (default: the collection's).
local function next_timestamp(forced, floor)
  local current = tonumber(redis.call('HGET', meta, 'timestamp') or '0')
  local ts
  if forced and forced > (floor or current) then
    ts = forced
  else
    local now = redis.call('TIME')
    ts = math.max(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), current + 1)
  end
  if ts > current then
    redis.call('HSET', meta, 'timestamp', fmt(ts))
  end
  redis.call('HINCRBY', meta, 'version', 1)
  return ts
end

local function stale(expected)
  return expected ~= '' and (redis.call('HGET', meta, 'version') or '0') ~= expected
end
"""

# ARGV: mode (create|update), id, body prefix, forced, if_match, expected version.
_WRITE = (
    _LUA_COMMON
    + """
local mode, id, prefix, forced, if_match = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if stale(ARGV[6]) then
  return {'retry'}
end
local current = redis.call('HGET', records, id)
local floor = nil
if current then
  if mode == 'create' then
    return {'exists', current}
  end
  floor = stamp_of(current)
end
if if_match ~= '' and floor ~= tonumber(if_match) then
  if current then
    return {'precondition', current}
  end
  return {'precondition'}
end
local ts = next_timestamp(forced, floor)
redis.call('HSET', records, id, prefix .. fmt(ts) .. '}')
redis.call('ZREM', deleted, id)
return {'ok', fmt(ts)}
"""
)

# ARGV: id, forced, if_match.
_DELETE = (
    _LUA_COMMON
    + """
local id, forced, if_match = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local current = redis.call('HGET', records, id)
if not current then
  if if_match ~= '' then
    return {'precondition'}
  end
  return {'missing'}
end
local stamp = stamp_of(current)
if if_match ~= '' and stamp ~= tonumber(if_match) then
  return {'precondition', current}
end
local ts = next_timestamp(forced, stamp)
redis.call('HDEL', records, id)
redis.call('ZADD', deleted, fmt(ts), id)
return {'ok', fmt(ts)}
"""
)

# ARGV: expected version, ids... (all live at that version).
_DELETE_MANY = (
    _LUA_COMMON
    + """
if stale(ARGV[1]) then
  return {'retry'}
end
local rv = {'ok'}
for i = 2, #ARGV do
  local ts = next_timestamp(nil, stamp_of(redis.call('HGET', records, ARGV[i])))
  redis.call('HDEL', records, ARGV[i])
  redis.call('ZADD', deleted, fmt(ts), ARGV[i])
  rv[i] = fmt(ts)
end
return rv
"""
)


def _forced(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value < TIMESTAMP_LIMIT:
        return value
    return None


def _body_prefix(object_id: str, record: Record) -> bytes:
    """The stored JSON of ``record`` up to its ``last_modified`` value."""
    fields = {k: v for k, v in record.items() if k not in ("id", "last_modified")}
    fields["id"] = object_id
    return orjson.dumps(fields)[:-1] + b',"last_modified":'


def _tombstone(object_id: bytes, score: float) -> Record:
    return {"id": object_id.decode(), "last_modified": int(score), "deleted": True}


class _Keys(NamedTuple):
    records: str
    deleted: str
    meta: str


class _State(NamedTuple):
    """A collection read at one instant."""

    timestamp: int
    version: str
    records: dict[bytes, bytes]
    tombstones: list[tuple[bytes, float]]


class _Snapshot(threading.local):
    states: dict[_Keys, _State] | None = None


class RedisStorage(RedisBackend, StorageBase):
    """Storage in a Redis database.

    Settings (read by :func:`load`): ``storage.url`` (a ``redis://``,
    ``rediss://`` or ``unix://`` URL; its ``/N`` selects the database) and
    ``redis.connect_timeout_seconds``, ``redis.timeout_seconds``,
    ``redis.max_connections``.

    :param connection: a :class:`~kiln._redis.RedisConnection`, or a URL
        (then the process's shared connection to it); the backend releases
        it in :meth:`close`.
    :param namespace: prefix of every key.
    :param max_attempts: tries of a write whose optimistic check (unique
        fields, ``delete_all``) keeps losing to concurrent writers, before
        :class:`~kiln.exceptions.BackendError`.
    """

    supports_transactions = False

    def __init__(
        self,
        connection: RedisConnection | str = "redis://localhost:6379/0",
        *,
        namespace: str = NAMESPACE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        super().__init__(connection, namespace)
        self.max_attempts = max_attempts
        self._snapshot = _Snapshot()
        register = self.connection.register_script
        self._write_script = register(_WRITE)
        self._delete_script = register(_DELETE)
        self._delete_many_script = register(_DELETE_MANY)

    # -- lifecycle (initialize_schema, flush, heartbeat, close, transaction:
    # RedisBackend; transaction groups nothing, see the module) ----------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Each collection read in the block is loaded once, whole, and its
        reads are answered from that copy."""
        local = self._snapshot
        if local.states is not None:
            yield
            return
        local.states = {}
        try:
            yield
        finally:
            local.states = None

    # -- keys and reads ------------------------------------------------

    def _keys(self, resource_name: str, parent_id: str) -> _Keys:
        base = f"{self.namespace}{encode_key_part(resource_name)}:{encode_key_part(parent_id)}:"
        return _Keys(base + "records", base + "deleted", base + "meta")

    def _load(self, keys: _Keys, *, include_deleted: bool) -> _State:
        """The collection, read in one ``MULTI``/``EXEC``."""
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=True)
            pipe.hmget(keys.meta, "timestamp", "version")
            pipe.hgetall(keys.records)
            if include_deleted:
                pipe.zrange(keys.deleted, 0, -1, withscores=True)
            replies = pipe.execute()
        timestamp, version = replies[0]
        return _State(
            int(timestamp or 0),
            (version or b"0").decode(),
            replies[1],
            replies[2] if include_deleted else [],
        )

    def _state(self, keys: _Keys, *, include_deleted: bool) -> _State:
        states = self._snapshot.states
        if states is None:
            return self._load(keys, include_deleted=include_deleted)
        state = states.get(keys)
        if state is None:
            state = states[keys] = self._load(keys, include_deleted=True)
        return state

    def _writable(self, resource_name: str, parent_id: str) -> _Keys:
        if self._snapshot.states is not None:
            raise RuntimeError("No write may happen inside snapshot().")
        return self._keys(resource_name, parent_id)

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        keys = self._keys(resource_name, parent_id)
        if self._snapshot.states is not None:
            return self._state(keys, include_deleted=True).timestamp
        with self.connection.errors():
            timestamp = self.connection.client.hget(keys.meta, "timestamp")
        return int(timestamp or 0)

    # -- single records ------------------------------------------------

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
        return self._write(
            "create", resource_name, parent_id, object_id, record, None, unique_fields
        )

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        keys = self._keys(resource_name, parent_id)
        if self._snapshot.states is not None:
            body = self._state(keys, include_deleted=True).records.get(object_id.encode())
        else:
            with self.connection.errors():
                body = self.connection.client.hget(keys.records, object_id)
        if body is None:
            raise RecordNotFoundError(object_id)
        rv: Record = orjson.loads(body)
        return rv

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
        return self._write(
            "update", resource_name, parent_id, object_id, record, if_match, unique_fields
        )

    def _write(
        self,
        mode: str,
        resource_name: str,
        parent_id: str,
        object_id: str,
        record: Record,
        if_match: int | None,
        unique_fields: Sequence[str],
    ) -> Record:
        keys = self._writable(resource_name, parent_id)
        prefix = _body_prefix(object_id, record)
        forced = _forced(record.get("last_modified"))
        unique = [
            (field, value)
            for field in unique_fields
            if (value := get_path(record, field)) is not MISSING and value is not None
        ]
        for _ in range(self.max_attempts):
            expected = ""
            if unique:
                state = self._load(keys, include_deleted=False)
                self._check(mode, state, object_id, if_match, unique)
                expected = state.version
            with self.connection.errors():
                reply = self._write_script(
                    keys=keys,
                    args=[
                        mode,
                        object_id,
                        prefix,
                        "" if forced is None else forced,
                        "" if if_match is None else if_match,
                        expected,
                    ],
                )
            status = reply[0]
            if status == b"ok":
                rv: Record = orjson.loads(prefix + reply[1] + b"}")
                return rv
            if status == b"exists":
                raise UnicityError("id", orjson.loads(reply[1]))
            if status == b"precondition":
                raise PreconditionFailed(orjson.loads(reply[1]) if len(reply) > 1 else None)
            # "retry": another write changed the collection since the check.
        raise self._contention(resource_name, parent_id)

    def _contention(self, resource_name: str, parent_id: str) -> BackendError:
        return BackendError(
            f"Gave up writing to collection {resource_name!r} of {parent_id!r} after "
            f"{self.max_attempts} attempts: concurrent writes kept changing it. Try again."
        )

    @staticmethod
    def _check(
        mode: str,
        state: _State,
        object_id: str,
        if_match: int | None,
        unique: list[tuple[str, Any]],
    ) -> None:
        """The contract errors a write would raise on ``state``, in the memory backend's order."""
        key = object_id.encode()
        existing = state.records.get(key)
        current = orjson.loads(existing) if existing is not None else None
        if mode == "create" and current is not None:
            raise UnicityError("id", current)
        if if_match is not None and (current is None or current["last_modified"] != if_match):
            raise PreconditionFailed(current)
        for other_key, body in state.records.items():
            if other_key == key:
                continue
            other = orjson.loads(body)
            for field, value in unique:
                if json_equal(get_path(other, field), value):
                    raise UnicityError(field, other)

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        keys = self._writable(resource_name, parent_id)
        forced = _forced(last_modified)
        with self.connection.errors():
            reply = self._delete_script(
                keys=keys,
                args=[
                    object_id,
                    "" if forced is None else forced,
                    "" if if_match is None else if_match,
                ],
            )
        status = reply[0]
        if status == b"missing":
            raise RecordNotFoundError(object_id)
        if status == b"precondition":
            raise PreconditionFailed(orjson.loads(reply[1]) if len(reply) > 1 else None)
        return {"id": object_id, "last_modified": int(reply[1]), "deleted": True}

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
        state = self._state(self._keys(resource_name, parent_id), include_deleted=include_deleted)
        candidates: list[Record] = [orjson.loads(body) for body in state.records.values()]
        if include_deleted:
            candidates.extend(_tombstone(i, score) for i, score in state.tombstones)
        found = select(candidates, filters, pagination_rules)
        sort_records(found, sorting)
        if limit is not None:
            found = found[: max(limit, 0)]
        return found

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        keys = self._keys(resource_name, parent_id)
        if not filters and self._snapshot.states is None:
            with self.connection.errors():
                return int(self.connection.client.hlen(keys.records))
        state = self._state(keys, include_deleted=False)
        return len(select((orjson.loads(body) for body in state.records.values()), filters))

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        keys = self._writable(resource_name, parent_id)
        for _ in range(self.max_attempts):
            state = self._load(keys, include_deleted=False)
            found = select([orjson.loads(body) for body in state.records.values()], filters)
            sort_records(found, sorting)
            if limit is not None:
                found = found[: max(limit, 0)]
            if not found:
                return []
            ids = [record["id"] for record in found]
            with self.connection.errors():
                reply = self._delete_many_script(keys=keys, args=[state.version, *ids])
            if reply[0] == b"ok":
                return [
                    {"id": object_id, "last_modified": int(stamp), "deleted": True}
                    for object_id, stamp in zip(ids, reply[1:], strict=True)
                ]
        raise self._contention(resource_name, parent_id)

    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        keys = self._writable(resource_name, parent_id)
        high = "+inf" if before is None else f"({before}"
        with self.connection.errors():
            return int(self.connection.client.zremrangebyscore(keys.deleted, "-inf", high))


def load(config: Any) -> RedisStorage:
    """The backend of ``storage.backend = "redis"``.

    Reads ``storage.url`` (a Redis URL) and the ``redis.*`` settings.

    :raises kiln.exceptions.ConfigError: the driver is missing, or
        ``storage.url`` is not a Redis URL.
    """
    return RedisStorage(connection_from_config(config, "storage"))
