"""Storage in Redis (redis-py + hiredis): every flush is one atomic Lua script.

Layout, per collection (``<r>`` and ``<p>`` are the resource name and the
parent id, percent-encoded by :func:`kiln._redis.encode_key_part`, so no
name can contain the ``:`` separator or act as a glob)::

    kiln:storage:<r>:<p>:records   HASH  id -> the record's JSON, ending with "last_modified":<ms>}
    kiln:storage:<r>:<p>:deleted   ZSET  id -> the tombstone's last_modified (score)
    kiln:storage:<r>:<p>:meta      HASH  timestamp -> collection timestamp

Writes. :meth:`RedisStorage.apply` makes a unit of work's writes, across
collections, in one Lua script (``EVALSHA``; Redis runs a script alone,
nothing interleaves). The script first checks every write in order -- its
expectation (no live record, or the live record's ``last_modified``) and its
``unique_fields`` (JSON equality over the collection's live records, decoded
by the server's ``cjson``), each seeing the earlier writes of the call --
and gives each its timestamp ``max(now, current + 1)`` from the server's
clock (``TIME``); only when every check passed does it write the records,
tombstones and collection timestamps. A failed check writes nothing and
answers the failing write's index (:class:`~kiln.storage.WriteConflict`).
So a flush is all or nothing, a compare and its swap cannot be separated,
N concurrent creates of one id have one winner, and timestamps increase in
commit order across every process using the server. ``create``,
``update``, ``delete`` and ``delete_all`` read, raise the contract's
errors, then make one ``apply`` (:class:`~kiln.storage.AppliedWrites`).

Reads. ``list_all`` and ``count_all`` load the collection (``HGETALL``, and
the tombstones) in one ``MULTI``/``EXEC`` and filter, sort and page in
Python with :mod:`kiln.storage._python_filters`, the memory backend's code:
the cost of a list is proportional to the collection, not to the page.

Limits. No transactions: Redis cannot roll back a sequence of scripts, so
:meth:`RedisStorage.transaction` groups nothing and
``supports_transactions`` is ``False`` (a unit of work that flushed before
its end, a batch reading its own writes, keeps that flush when it fails
later). The script compares unique values as ``cjson`` decodes them:
numbers as doubles (integers beyond ``2**53`` that differ only past that
precision are equal), and an empty array equals an empty object. Forced
timestamps (replication) must be below ``2**53`` (they are scores and Lua
numbers); larger ones are ignored like stale ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple
from urllib.parse import unquote

import orjson

from kiln._redis import (
    RedisBackend,
    RedisConnection,
    connection_from_config,
    encode_key_part,
    glob_escape,
)
from kiln.storage import (
    ABSENT,
    LIVE,
    AppliedWrites,
    Filter,
    Record,
    RecordNotFoundError,
    Sort,
    Write,
    WriteConflict,
    check_writes,
)
from kiln.storage._python_filters import MISSING, get_path, select, sort_records

__all__ = ["RedisStorage", "load"]

NAMESPACE = "kiln:storage:"
#: How the script receives the expectations that are not a timestamp.
_EXPECTED: dict[int, str] = {ABSENT: "", LIVE: "*"}
#: Forced timestamps must be below this (exact as a double).
TIMESTAMP_LIMIT = 2**53

# KEYS: records, deleted and meta of each collection the writes touch, in threes.
# ARGV: six per write: its collection (0-based, in KEYS' order), id, expected
# last_modified ('': no live record, '*': a live record), forced last_modified (''), the stored JSON
# up to its last_modified value ('': delete), unique checks ('': none; else the
# JSON list of [path keys, value, the value's JSON text if a string, else '']).
# Returns the timestamps, or the 0-based index of the first write whose check failed.
_APPLY = """
local function fmt(n)
  return string.format('%.0f', n)
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Each collection: its keys, its timestamp as stored and as the writes move it,
-- its live records as the earlier writes of this call leave them (pending, over
-- the hash; false: deleted) and, once a unique check needs it, its hash (HGETALL).
local collections = {}
local function collection(position)
  local c = collections[position]
  if not c then
    local base = position * 3
    c = {records = KEYS[base + 1], deleted = KEYS[base + 2], meta = KEYS[base + 3], pending = {}}
    c.stored = tonumber(redis.call('HGET', c.meta, 'timestamp') or '0')
    c.current = c.stored
    collections[position] = c
  end
  return c
end

local function live_body(c, id)
  local body = c.pending[id]
  if body == nil then
    body = redis.call('HGET', c.records, id)
  end
  return body
end

local decoded = {}
local function decode(body)
  local record = decoded[body]
  if record == nil then
    record = cjson.decode(body)
    decoded[body] = record
  end
  return record
end

-- The value at a path of object keys (an array has no string keys), or nil.
local function field(node, path)
  for _, key in ipairs(path) do
    if type(node) ~= 'table' then
      return nil
    end
    node = node[key]
  end
  return node
end

-- JSON equality of decoded values: types must match, numbers by value.
local function same(a, b)
  if a == b then
    return true
  end
  if type(a) ~= 'table' or type(b) ~= 'table' then
    return false
  end
  for k, v in pairs(a) do
    if b[k] == nil or not same(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

-- Whether a live record other than id holds one of the checks' values.
local function held(c, id, checks)
  if not c.hash then
    c.hash = redis.call('HGETALL', c.records)
  end
  local function holds(other, body)
    if other == id or not body then
      return false
    end
    for _, check in ipairs(checks) do
      -- A string is stored as the same JSON text wherever it is: a body
      -- without that text cannot hold it, and is not decoded.
      if (check[3] == '' or string.find(body, check[3], 1, true))
          and same(field(decode(body), check[1]), check[2]) then
        return true
      end
    end
    return false
  end
  local hash = c.hash
  for i = 1, #hash, 2 do
    if c.pending[hash[i]] == nil and holds(hash[i], hash[i + 1]) then
      return true
    end
  end
  for other, body in pairs(c.pending) do
    if holds(other, body) then
      return true
    end
  end
  return false
end

local planned, stamps = {}, {}
for index = 0, #ARGV / 6 - 1 do
  local a = index * 6
  local c = collection(tonumber(ARGV[a + 1]))
  local id, expected, forced = ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local prefix, unique = ARGV[a + 5], ARGV[a + 6]
  local current = live_body(c, id)
  local floor
  if expected == '' then
    if current then
      return index
    end
    floor = c.current
  elseif expected == '*' then
    if not current then
      return index
    end
    floor = tonumber(string.match(current, '(%d+)}$'))
  else
    if not current or string.match(current, '(%d+)}$') ~= expected then
      return index
    end
    floor = tonumber(expected)
  end
  if unique ~= '' and held(c, id, cjson.decode(unique)) then
    return index
  end
  local ts
  if forced and forced > floor then
    ts = forced
  else
    ts = math.max(now, c.current + 1)
  end
  c.current = math.max(c.current, ts)
  local body = false
  if prefix ~= '' then
    body = prefix .. fmt(ts) .. '}'
  end
  c.pending[id] = body
  planned[index + 1] = {c, id, ts, body, expected == ''}
  stamps[index + 1] = ts
end

for _, write in ipairs(planned) do
  local c, id, ts, body, created = write[1], write[2], write[3], write[4], write[5]
  if body then
    redis.call('HSET', c.records, id, body)
    if created then
      redis.call('ZREM', c.deleted, id)
    end
  else
    redis.call('HDEL', c.records, id)
    redis.call('ZADD', c.deleted, fmt(ts), id)
  end
end
for _, c in pairs(collections) do
  if c.current > c.stored then
    redis.call('HSET', c.meta, 'timestamp', fmt(c.current))
  end
end
return stamps
"""


def _forced(value: int | None) -> int | str:
    """A forced timestamp as the script's argument: ``""`` when none or too large."""
    return value if value is not None and value < TIMESTAMP_LIMIT else ""


def _body_prefix(object_id: str, record: Record) -> bytes:
    """The stored JSON of ``record`` up to its ``last_modified`` value."""
    fields = {k: v for k, v in record.items() if k not in ("id", "last_modified")}
    fields["id"] = object_id
    return orjson.dumps(fields)[:-1] + b',"last_modified":'


def _unique_checks(write: Write) -> bytes:
    """The write's unique values the script checks: ``[[path keys, value, text], ...]``,
    ``text`` being a string value's JSON (as every stored body spells it), else ``""``."""
    assert write.record is not None
    checks = [
        (name.split("."), value, orjson.dumps(value).decode() if isinstance(value, str) else "")
        for name in write.unique_fields
        if (value := get_path(write.record, name)) is not MISSING and value is not None
    ]
    return orjson.dumps(checks) if checks else b""


def _tombstone(object_id: bytes, score: float) -> Record:
    return {"id": object_id.decode(), "last_modified": int(score), "deleted": True}


class _Keys(NamedTuple):
    records: str
    deleted: str
    meta: str


class _State(NamedTuple):
    """A collection read at one instant."""

    timestamp: int
    records: dict[bytes, bytes]
    tombstones: list[tuple[bytes, float]]


class _Snapshot(threading.local):
    states: dict[_Keys, _State] | None = None


class RedisStorage(RedisBackend, AppliedWrites):
    """Storage in a Redis database.

    Settings (read by :func:`load`): ``storage.url`` (a ``redis://``,
    ``rediss://`` or ``unix://`` URL; its ``/N`` selects the database) and
    ``redis.connect_timeout_seconds``, ``redis.timeout_seconds``,
    ``redis.max_connections``.

    :param connection: a :class:`~kiln._redis.RedisConnection`, or a URL
        (then the process's shared connection to it); the backend releases
        it in :meth:`close`.
    :param namespace: prefix of every key.
    """

    supports_transactions = False

    def __init__(
        self,
        connection: RedisConnection | str = "redis://localhost:6379/0",
        *,
        namespace: str = NAMESPACE,
    ) -> None:
        super().__init__(connection, namespace)
        self._snapshot = _Snapshot()
        self._apply_script = self.connection.register_script(_APPLY)

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

    # -- units of work: the flush ----------------------------------------

    def apply(self, writes: Sequence[Write], *, commit: bool = False) -> list[int]:
        """The flush: every write checked, stamped and made in one Lua script,
        all of them or none (see the module). ``commit`` changes nothing: the
        script is its own unit."""
        if not writes:
            return []
        check_writes(writes)
        positions: dict[tuple[str, str], int] = {}
        keys: list[str] = []
        args: list[Any] = []
        for write in writes:
            collection = (write.resource_name, write.parent_id)
            position = positions.get(collection)
            if position is None:
                position = positions[collection] = len(positions)
                keys.extend(self._writable(*collection))
            record = write.record
            args += (
                position,
                write.object_id,
                _EXPECTED.get(write.expected, write.expected),
                _forced(write.forced),
                b"" if record is None else _body_prefix(write.object_id, record),
                _unique_checks(write) if record is not None and write.unique_fields else b"",
            )
        with self.connection.errors():
            reply = self._apply_script(keys=keys, args=args)
        if isinstance(reply, int):
            raise WriteConflict(reply)
        return [int(stamp) for stamp in reply]

    # -- keys and reads ------------------------------------------------

    def _keys(self, resource_name: str, parent_id: str) -> _Keys:
        base = f"{self.namespace}{encode_key_part(resource_name)}:{encode_key_part(parent_id)}:"
        return _Keys(base + "records", base + "deleted", base + "meta")

    def _load(self, keys: _Keys, *, include_deleted: bool) -> _State:
        """The collection, read in one ``MULTI``/``EXEC``."""
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=True)
            pipe.hget(keys.meta, "timestamp")
            pipe.hgetall(keys.records)
            if include_deleted:
                pipe.zrange(keys.deleted, 0, -1, withscores=True)
            replies = pipe.execute()
        return _State(int(replies[0] or 0), replies[1], replies[2] if include_deleted else [])

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

    # -- single records (create, update, delete: AppliedWrites) --------

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

    # -- many records (delete_all: AppliedWrites) ----------------------

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

    def list_descendants(self, parent_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """The collections are found with ``SCAN`` over the namespace (its cost
        grows with the number of keys of the database), then their ids read
        with one pipeline of ``HKEYS``."""
        ancestors = [ancestor for ancestor in parent_ids if ancestor]
        if not ancestors:
            return []
        namespace = glob_escape(self.namespace)
        patterns = []
        for ancestor in ancestors:
            encoded = encode_key_part(ancestor)
            patterns += [f"{namespace}*:{encoded}:records", f"{namespace}*:{encoded}%2F*:records"]
        client = self.connection.client
        collections: set[tuple[str, str]] = set()
        with self.connection.errors():
            for pattern in patterns:
                for key in client.scan_iter(match=pattern, count=1000):
                    # Encoded parts hold no ":": the key is <resource>:<parent>:records.
                    resource_name, parent_id, _ = key.decode()[len(self.namespace) :].split(":")
                    collections.add((unquote(resource_name), unquote(parent_id)))
            ordered = sorted(collections)
            pipe = client.pipeline(transaction=True)
            for resource_name, parent_id in ordered:
                pipe.hkeys(self._keys(resource_name, parent_id).records)
            replies = pipe.execute() if ordered else []
        return [
            (resource_name, parent_id, object_id.decode())
            for (resource_name, parent_id), ids in zip(ordered, replies, strict=True)
            for object_id in sorted(ids)
        ]

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
