from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln import _redis
from kiln._contract import property_settings
from kiln.config import Configuration, validate
from kiln.exceptions import BackendError, ConfigError, TransientBackendError
from kiln.storage import (
    ABSENT,
    WRITE_ATTEMPTS,
    Filter,
    Operator,
    PreconditionFailed,
    RecordNotFoundError,
    Sort,
    UnicityError,
    Write,
    WriteConflict,
    load_storage,
)
from kiln.storage._python_filters import json_equal
from kiln.storage.redis import RedisStorage
from kiln.storage.testing import HOSTILE_STRINGS, StorageContract, run_threads

R = "mushroom"
P = "basicauth:alice"


class TestRedisStorage(StorageContract):
    @pytest.fixture
    def backend(self, redis_connection):
        return RedisStorage(redis_connection.url)

    @pytest.fixture
    def broken_backend(self, broken_redis_url, closing):
        return closing(RedisStorage(broken_redis_url))


@pytest.fixture
def connection(redis_connection):
    return redis_connection


@pytest.fixture
def storage(connection, closing):
    return closing(RedisStorage(connection.url))


@pytest.fixture
def rival(connection, closing):
    return closing(RedisStorage(connection.url))


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/15"


class RacingStorage(RedisStorage):
    """Lets ``rival`` write between this backend's read and its write, ``races`` times."""

    def __init__(self, connection, rival, races, write, **kwargs):
        super().__init__(connection, **kwargs)
        self.rival = rival
        self.races = races
        self.rival_write = write

    def _load(self, keys, *, include_deleted):
        state = super()._load(keys, include_deleted=include_deleted)
        if self.races:
            self.races -= 1
            self.rival_write(self.rival)
        return state


class Interfering(RedisStorage):
    """Lets ``rival`` write just before each flush of this backend, and ``after`` it."""

    def __init__(self, connection, rival, before, after):
        super().__init__(connection)
        self.rival = rival
        self.before = before
        self.after = after
        self.flushes = 0

    def apply(self, writes, *, commit=False):
        self.flushes += 1
        self.before(self.rival)
        try:
            return super().apply(writes, commit=commit)
        finally:
            self.after(self.rival)


# -- concurrency ---------------------------------------------------------------


def test_concurrent_read_modify_write_loops_lose_no_update(storage):
    storage.create(R, P, {"id": "counter", "n": 0})

    def bump(index):
        for _ in range(15):
            while True:
                current = storage.get(R, P, "counter")
                try:
                    storage.update(
                        R, P, "counter", {"n": current["n"] + 1}, if_match=current["last_modified"]
                    )
                    break
                except PreconditionFailed:
                    continue

    assert run_threads(6, bump) == [None] * 6
    assert storage.get(R, P, "counter")["n"] == 90


def test_concurrent_creates_with_one_unique_value_let_exactly_one_win(storage):
    storage.create(R, P, {"id": "other", "email": "b@x"}, unique_fields=["email"])
    results = run_threads(
        8, lambda i: storage.create(R, P, {"id": f"r{i}", "email": "a@x"}, unique_fields=["email"])
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    losers = [r for r in results if r not in winners]
    assert all(isinstance(r, UnicityError) and r.field == "email" for r in losers)
    assert {r.existing["id"] for r in losers} == {winners[0]["id"]}
    assert len(storage.list_all(R, P, filters=[Filter("email", "a@x")])) == 1


def test_separate_clients_share_the_guarantees(redis_url, connection):
    clients = [
        RedisStorage(_redis.acquire(redis_url, _redis.Options(max_connections=50 + i)))
        for i in range(4)
    ]
    try:
        results = run_threads(4, lambda i: clients[i].create(R, P, {"id": "same", "n": i}))
        assert sum(isinstance(r, dict) for r in results) == 1
        assert all(isinstance(r, dict | UnicityError) for r in results)
        stamps = run_threads(4, lambda i: [clients[i].create(R, P, {}) for _ in range(20)])
        flat = [record["last_modified"] for batch in stamps for record in batch]
        assert len(set(flat)) == len(flat) == 80
    finally:
        for client in clients:
            client.close()


def test_a_since_follower_never_misses_a_concurrent_write(storage):
    created = []
    created_lock = threading.Lock()
    done = threading.Event()

    def write(index):
        for n in range(25):
            record = storage.create(R, P, {"w": index, "n": n})
            if n % 5 == 0:
                record = storage.delete(R, P, record["id"])
            elif n % 3 == 0:
                record = storage.update(R, P, record["id"], {"again": True})
            with created_lock:
                created.append((record["id"], record["last_modified"]))

    seen = {}
    problems = []

    def follow():
        since = 0
        while True:
            finished = done.is_set()
            page = storage.list_all(
                R,
                P,
                filters=[Filter("last_modified", since, Operator.GT)],
                sorting=[Sort("last_modified", 1)],
                include_deleted=True,
            )
            problems.extend(r["id"] for r in page if r["last_modified"] <= since)
            seen.update((r["id"], r["last_modified"]) for r in page)
            if page:
                since = page[-1]["last_modified"]
            if finished:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    assert run_threads(4, write) == [None] * 4
    done.set()
    follower.join()
    assert problems == []
    assert set(created) <= set(seen.items())


# -- optimistic checks: a write landing between the check and the write -----------


def test_a_unique_value_written_between_the_check_and_the_write_is_caught(connection, rival):
    storage = RacingStorage(
        _redis.acquire(connection.url),
        rival,
        races=1,
        write=lambda other: other.create(R, P, {"id": "rival", "email": "a@x"}),
    )
    try:
        with pytest.raises(UnicityError) as info:
            storage.create(R, P, {"id": "mine", "email": "a@x"}, unique_fields=["email"])
        assert info.value.existing["id"] == "rival"
        assert storage.races == 0
        assert [r["id"] for r in storage.list_all(R, P)] == ["rival"]
    finally:
        storage.close()


def test_an_unrelated_concurrent_write_does_not_make_a_write_start_again(connection, rival):
    storage = RacingStorage(
        _redis.acquire(connection.url), rival, races=2, write=lambda other: other.create(R, P, {})
    )
    try:
        record = storage.update(R, P, "mine", {"email": "a@x"}, unique_fields=["email"])
        assert storage.races == 1
        assert storage.get(R, P, "mine") == record
        assert storage.count_all(R, P) == 2
        assert record["last_modified"] == storage.collection_timestamp(R, P)
    finally:
        storage.close()


def test_direct_writes_that_keep_losing_races_ask_for_the_unit_to_run_again(connection, rival):
    rival.create(R, P, {"id": "b", "n": 0})
    storage = Interfering(
        _redis.acquire(connection.url),
        rival,
        before=lambda other: other.create(R, P, {"id": "a"}),
        after=lambda other: other.delete(R, P, "a"),
    )
    try:
        with pytest.raises(TransientBackendError, match="run it again"):
            storage.create(R, P, {"id": "a"})
        assert storage.flushes == WRITE_ATTEMPTS
        storage.before = lambda other: other.update(R, P, "b", {"n": 1})
        storage.after = lambda other: None
        for write in (
            lambda: storage.update(R, P, "b", {"email": "a@x"}, unique_fields=["email"]),
            lambda: storage.delete(R, P, "b"),
            lambda: storage.delete_all(R, P),
        ):
            with pytest.raises(TransientBackendError, match="run it again"):
                write()
        assert storage.flushes == 4 * WRITE_ATTEMPTS
        assert [(r["id"], r["n"], "email" in r) for r in storage.list_all(R, P)] == [
            ("b", 1, False)
        ]
    finally:
        storage.close()


def test_delete_all_picks_its_records_again_after_a_concurrent_change(connection, rival):
    for n in range(5):
        rival.create(R, P, {"id": f"r{n}", "n": n})
    storage = RacingStorage(
        _redis.acquire(connection.url),
        rival,
        races=1,
        write=lambda other: other.update(R, P, "r0", {"n": 10}),
    )
    try:
        tombstones = storage.delete_all(R, P, filters=[Filter("n", 3, Operator.LT)])
        assert sorted(t["id"] for t in tombstones) == ["r1", "r2"]
        assert sorted(r["id"] for r in storage.list_all(R, P)) == ["r0", "r3", "r4"]
    finally:
        storage.close()


def test_a_precondition_is_checked_before_unique_fields(storage):
    storage.create(R, P, {"id": "a", "email": "a@x"})
    record = storage.create(R, P, {"id": "b"})
    with pytest.raises(PreconditionFailed) as info:
        storage.update(R, P, "b", {"email": "a@x"}, if_match=1, unique_fields=["email"])
    assert info.value.existing == record
    with pytest.raises(UnicityError) as unicity:
        storage.create(R, P, {"id": "b", "email": "a@x"}, unique_fields=["email"])
    assert unicity.value.field == "id"


# -- the flush: one script, all or nothing -------------------------------------------


def _dump(client):
    """Every key of the database and its serialized value: equal only if nothing changed."""
    return {key: client.dump(key) for key in client.keys("*")}


@pytest.mark.parametrize(
    "third",
    [
        Write(R, P, "live", {}, ABSENT),
        Write(R, P, "live", {"n": 9}, 1),
        Write(R, P, "fresh", {"name": "taken"}, ABSENT, ("name",)),
        Write(R, P, "fresh", {"name": "first"}, ABSENT, ("name",)),
        Write(R, P, "new", {}, ABSENT),
    ],
    ids=["create-live", "stale-update", "unique-held", "unique-of-write-1", "id-of-write-1"],
)
def test_a_conflict_at_the_third_of_five_writes_writes_nothing(storage, connection, third):
    storage.create(R, P, {"id": "live", "name": "taken"})
    doomed = storage.create(R, P, {"id": "doomed"})
    other = storage.create(R, "other", {"id": "x"})
    writes = [
        Write(R, P, "new", {"name": "first"}, ABSENT, ("name",)),
        Write(R, P, "doomed", None, doomed["last_modified"]),
        third,
        Write(R, "other", "x", {"n": 2}, other["last_modified"]),
        Write(R, "other", "y", {}, ABSENT),
    ]
    before = _dump(connection.client)
    with pytest.raises(WriteConflict) as info:
        storage.apply(writes)
    assert info.value.index == 2
    assert _dump(connection.client) == before
    stamps = storage.apply(writes[:2] + writes[3:])
    assert storage.get(R, P, "new")["last_modified"] == stamps[0]
    assert storage.get(R, "other", "y")["last_modified"] == stamps[3]


def test_a_write_sees_the_records_the_earlier_writes_of_its_call_left(storage):
    a = storage.create(R, P, {"id": "a", "name": "x"})
    b = storage.create(R, P, {"id": "b", "name": "z"})
    stamps = storage.apply(
        [
            Write(R, P, "a", {"name": "y"}, a["last_modified"], ("name",)),
            Write(R, P, "c", {"name": "x"}, ABSENT, ("name",)),
            Write(R, P, "b", None, b["last_modified"]),
            Write(R, P, "d", {"name": "z"}, ABSENT, ("name",)),
            Write(R, P, "b", {"again": True}, ABSENT),
        ]
    )
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 5
    assert {r["id"]: r.get("name") for r in storage.list_all(R, P, include_deleted=True)} == {
        "a": "y",
        "b": None,
        "c": "x",
        "d": "z",
    }
    assert storage.get(R, P, "b") == {"id": "b", "again": True, "last_modified": stamps[4]}
    with pytest.raises(WriteConflict) as info:
        storage.apply(
            [
                Write(R, P, "e", {"name": "w"}, ABSENT, ("name",)),
                Write(R, P, "f", {"name": "y"}, ABSENT, ("name",)),
            ]
        )
    assert info.value.index == 1


def test_unique_values_are_read_along_object_keys_only(storage):
    storage.create(R, P, {"id": "list", "a": [{"b": 1}]})
    storage.create(R, P, {"id": "object", "a": {"0": {"b": 2}}})
    storage.apply([Write(R, P, "new", {"a": {"0": {"b": 1}}}, ABSENT, ("a.0.b",))])
    with pytest.raises(WriteConflict):
        storage.apply([Write(R, P, "other", {"a": {"0": {"b": 2.0}}}, ABSENT, ("a.0.b",))])
    with pytest.raises(WriteConflict):
        storage.apply([Write(R, P, "other", {"a": {"0": {"b": 1}}}, ABSENT, ("a.0.b",))])


def _json():
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=4)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
        ),
        max_leaves=6,
    )


def _json_pairs():
    """Pairs of values, often equal in JSON (or as Lua reads them)."""

    def variants(value):
        if isinstance(value, int) and not isinstance(value, bool):
            return st.sampled_from([value, float(value)])
        if value == {}:
            return st.sampled_from([{}, []])
        return st.just(value)

    return _json().flatmap(lambda held: st.tuples(st.just(held), variants(held) | _json()))


def _blur(value):
    """``value`` as the script's ``cjson`` sees it: an empty object is an empty array."""
    if isinstance(value, dict):
        return {k: _blur(v) for k, v in value.items()} if value else []
    if isinstance(value, list):
        return [_blur(v) for v in value]
    return value


@property_settings(200)
@given(pair=_json_pairs())
def test_the_script_compares_unique_values_as_documented(storage, pair):
    held, value = pair
    storage.flush()
    storage.create(R, P, {"id": "holder", "o": {"v": held}})
    write = Write(R, P, "new", {"o": {"v": value}}, ABSENT, ("o.v",))
    try:
        storage.apply([write])
    except WriteConflict:
        conflict = True
    else:
        conflict = False
    assert conflict == (value is not None and json_equal(_blur(held), _blur(value)))


def test_timestamps_follow_each_collection_within_one_flush(storage, connection):
    base = storage.create(R, "a", {"id": "x"})["last_modified"]
    high = base + 10_000_000
    storage.create(R, "b", {"id": "y", "last_modified": high})
    stamps = storage.apply(
        [
            Write(R, "a", "1", {}, ABSENT),
            Write(R, "b", "2", {}, ABSENT),
            Write(R, "a", "3", {}, ABSENT, forced=base + 5_000_000),
            Write(R, "a", "4", {}, ABSENT),
            Write(R, "b", "5", {}, ABSENT, forced=base + 1),
            Write(R, "c", "6", {}, ABSENT),
            Write(R, "b", "y", None, high, forced=high - 1),
        ]
    )
    seconds, microseconds = connection.client.time()
    now = seconds * 1000 + microseconds // 1000
    assert base < stamps[0] <= max(now, base + 1)
    assert stamps[1:5] == [high + 1, base + 5_000_000, base + 5_000_001, high + 2]
    assert stamps[5] <= min(now, stamps[0])
    assert stamps[6] == high + 3
    assert storage.collection_timestamp(R, "a") == base + 5_000_001
    assert storage.collection_timestamp(R, "b") == high + 3
    assert storage.collection_timestamp(R, "c") == stamps[5]
    assert [storage.get(R, "a", i)["last_modified"] for i in "134"] == [
        stamps[0],
        stamps[2],
        stamps[3],
    ]


def test_concurrent_flushes_across_collections_are_all_or_nothing(storage):
    storage.create(R, "counters", {"id": "n", "value": 0})
    first_round = threading.Barrier(6)
    conflicts = []

    def count(index):
        for attempt in range(1000):
            counter = storage.get(R, "counters", "n")
            if attempt == 0:
                first_round.wait()
            value = counter["value"] + 1
            writes = [
                Write(R, "log", f"{index}-{attempt}", {"value": value}, ABSENT),
                Write(R, "counters", "n", {"value": value}, counter["last_modified"]),
            ]
            try:
                storage.apply(writes)
            except WriteConflict as conflict:
                conflicts.append(conflict.index)
                continue
            if value > 60 - 6:
                return
        raise AssertionError("never done")  # pragma: no cover

    assert run_threads(6, count) == [None] * 6
    total = storage.get(R, "counters", "n")["value"]
    log = storage.list_all(R, "log", sorting=[Sort("value", 1)])
    assert [record["value"] for record in log] == list(range(1, total + 1))
    assert len(conflicts) >= 5
    assert set(conflicts) == {1}


# -- layout, names and timestamps ---------------------------------------------------


def test_records_tombstones_and_timestamps_live_under_documented_keys(storage, connection):
    created = storage.create("r:1", "/buckets/b*", {"id": "a", "n": 1})
    storage.create("r:1", "/buckets/b*", {"id": "b"})
    tombstone = storage.delete("r:1", "/buckets/b*", "b")
    base = "kiln:storage:r%3A1:%2Fbuckets%2Fb%2A:"
    client = connection.client
    assert sorted(client.keys("*")) == [
        f"{base}deleted".encode(),
        f"{base}meta".encode(),
        f"{base}records".encode(),
    ]
    assert client.hgetall(f"{base}records") == {
        b"a": b'{"n":1,"id":"a","last_modified":%d}' % created["last_modified"]
    }
    assert client.zrange(f"{base}deleted", 0, -1, withscores=True) == [
        (b"b", float(tombstone["last_modified"]))
    ]
    assert client.hgetall(f"{base}meta") == {b"timestamp": str(tombstone["last_modified"]).encode()}


@pytest.mark.parametrize(
    ("first", "second"),
    [(("a:b", "c"), ("a", "b:c")), (("a", "*"), ("a", "b")), (("%3A", ""), (":", ""))],
)
def test_names_with_separators_or_glob_characters_never_collide(storage, first, second):
    storage.create(*first, {"id": "x", "n": 1})
    storage.create(*second, {"id": "x", "n": 2})
    assert storage.get(*first, "x")["n"] == 1
    assert storage.get(*second, "x")["n"] == 2
    storage.delete_all(*first)
    storage.purge_deleted(*first)
    assert storage.list_all(*first, include_deleted=True) == []
    assert storage.get(*second, "x")["n"] == 2


@pytest.mark.parametrize("name", HOSTILE_STRINGS, ids=range(len(HOSTILE_STRINGS)))
def test_hostile_resource_and_parent_names_are_separate_collections(storage, name):
    storage.create(name, name, {"id": name, "v": name})
    storage.create(R, P, {"id": "plain"})
    assert storage.get(name, name, name)["v"] == name
    assert [r["id"] for r in storage.list_all(name, name)] == [name]
    assert storage.collection_timestamp(name, name) > 0
    assert [r["id"] for r in storage.list_all(R, P)] == ["plain"]


def test_flush_removes_only_the_storage_namespace(storage, connection):
    connection.client.set("kiln:storagex", "other")
    connection.client.set("unrelated", "kept")
    storage.create(R, P, {})
    storage.flush()
    assert sorted(connection.client.keys("*")) == [b"kiln:storagex", b"unrelated"]


def test_encoded_key_parts_agree_between_python_and_lua(connection):
    script = connection.register_script(
        _redis.LUA_ENCODE_KEY_PART + "return encode_key_part(ARGV[1])"
    )
    for value in [*HOSTILE_STRINGS, "nul\x00", "\U0010ffff", "AZaz09_.-~", "{tag}"]:
        encoded = _redis.encode_key_part(value)
        assert script(args=[value]) == encoded.encode()
        assert not set(encoded) & set(":*?[]{}\\ ")


def test_writes_survive_a_restarted_servers_empty_script_cache(storage, connection):
    storage.create(R, P, {"id": "a"})
    connection.client.script_flush()
    assert storage.update(R, P, "a", {"n": 1})["n"] == 1
    assert storage.delete(R, P, "a")["deleted"] is True


def test_timestamps_come_from_the_server_clock(storage, connection):
    seconds, microseconds = connection.client.time()
    record = storage.create(R, P, {})
    assert 0 <= record["last_modified"] - (seconds * 1000 + microseconds // 1000) < 5_000


def test_forced_timestamps_beyond_two_to_the_53_are_ignored(storage):
    record = storage.create(R, P, {"id": "a", "last_modified": 2**53})
    assert record["last_modified"] < 2**53
    updated = storage.update(R, P, "a", {"last_modified": 2**60})
    assert record["last_modified"] < updated["last_modified"] < 2**53
    stored = storage.create(R, P, {"id": "b", "last_modified": 2**53 - 1})
    assert stored["last_modified"] == 2**53 - 1
    with pytest.raises(PreconditionFailed):
        storage.update(R, P, "b", {}, if_match=2**53)


# -- snapshots and units of work -----------------------------------------------------


def test_a_snapshot_answers_every_read_from_one_state(storage, rival):
    first = storage.create(R, P, {"id": "a", "n": 1})
    storage.create(R, P, {"id": "b", "n": 2})
    storage.delete(R, P, "b")
    with storage.snapshot():
        stamp = storage.collection_timestamp(R, P)
        rival.create(R, P, {"id": "c", "n": 3})
        rival.update(R, P, "a", {"n": 9})
        with storage.snapshot():
            assert storage.get(R, P, "a") == first
            with pytest.raises(RecordNotFoundError):
                storage.get(R, P, "c")
        assert [r["id"] for r in storage.list_all(R, P)] == ["a"]
        assert sorted(r["id"] for r in storage.list_all(R, P, include_deleted=True)) == ["a", "b"]
        assert storage.count_all(R, P) == 1
        assert storage.count_all(R, P, filters=[Filter("n", 1)]) == 1
        assert storage.collection_timestamp(R, P) == stamp
        assert storage.collection_timestamp(R, "other") == 0
        storage.list_all(R, P)[0]["n"] = 5
        assert storage.get(R, P, "a")["n"] == 1
    assert storage.count_all(R, P) == 2
    assert storage.get(R, P, "a")["n"] == 9
    assert storage.collection_timestamp(R, P) > stamp


def test_a_write_inside_a_snapshot_is_refused(storage):
    with storage.snapshot():
        with pytest.raises(RuntimeError, match="snapshot"):
            storage.create(R, P, {})
        with pytest.raises(RuntimeError, match="snapshot"):
            storage.purge_deleted(R, P)
    assert storage.create(R, P, {"id": "a"})["id"] == "a"


def test_a_failing_transaction_keeps_its_writes_as_documented(storage):
    assert storage.supports_transactions is False

    def fail():
        with storage.transaction():
            storage.create(R, P, {"id": "a"})
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert storage.get(R, P, "a")["id"] == "a"


# -- connections, failures and loading ------------------------------------------------


def test_a_silent_server_fails_with_backend_error_after_the_timeout(silent_server):
    options = _redis.Options(connect_timeout=0.2, timeout=0.2)
    storage = RedisStorage(_redis.acquire(silent_server, options))
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            storage.get(R, P, "a")
        assert time.monotonic() - started < 2
        assert "Timeout" in str(info.value)
        assert isinstance(info.value.original, Exception)
        assert storage.heartbeat() is False
    finally:
        storage.close()


def test_an_exhausted_pool_fails_with_backend_error(redis_url):
    options = _redis.Options(timeout=0.2, max_connections=1)
    connection = _redis.acquire(redis_url, options)
    held = connection.client.connection_pool.get_connection()
    storage = RedisStorage(connection)
    try:
        with pytest.raises(BackendError, match="No connection available"):
            storage.collection_timestamp(R, P)
    finally:
        connection.client.connection_pool.release(held)
        storage.close()


def test_error_messages_hide_the_password():
    storage = RedisStorage(_redis.acquire("redis://user:s3cret@127.0.0.1:1/15"))
    try:
        with pytest.raises(BackendError) as info:
            storage.get(R, P, "a")
        assert "s3cret" not in str(info.value)
        assert "redis://user:***@127.0.0.1:1/15" in str(info.value)
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:1/0", "redis://:***@host:1/0"),
        ("redis://u:pw@host/0", "redis://u:***@host/0"),
        ("redis://host:1/0", "redis://host:1/0"),
        ("unix:///tmp/redis.sock?db=1", "unix:///tmp/redis.sock?db=1"),
    ],
)
def test_redact_url_removes_only_the_password(url, shown):
    assert _redis.redact_url(url) == shown


def test_connections_are_shared_per_url_and_released_by_their_last_user(redis_url):
    first = _redis.acquire(redis_url)
    second = _redis.acquire(redis_url)
    assert first is second
    storage = RedisStorage(redis_url)
    assert storage.connection is first
    assert first.users == 3
    storage.close()
    storage.close()
    other = _redis.acquire(redis_url, _redis.Options(timeout=1.5))
    assert other is not first
    other.release()
    assert first.users == 2
    first.release()
    first.release()
    assert first.users == 0
    fresh = _redis.acquire(redis_url)
    assert fresh is not first
    assert fresh.ping() is True
    fresh.release()


def test_delete_matching_takes_the_prefix_literally_and_in_batches(connection):
    client = connection.client
    for n in range(_redis.DELETE_BATCH * 2 + 3):
        client.set(f"a*[b]?:{n}", n)
    client.set("aX[b]?:1", 1)
    client.set("a*b:1", 1)
    connection.delete_matching("a*[b]?:")
    assert sorted(client.keys("*")) == [b"a*b:1", b"aX[b]?:1"]


def test_a_url_that_is_not_a_redis_url_is_a_config_error():
    with pytest.raises(ConfigError, match="not a Redis URL"):
        _redis.acquire("redis://localhost:port/0")


def test_load_storage_builds_a_redis_backend_from_settings(redis_url):
    config = Configuration.from_mapping(
        {
            "storage": {"backend": "redis", "url": redis_url},
            "redis": {"timeout_seconds": 2, "connect_timeout_seconds": 1, "max_connections": 7},
        }
    )
    storage = load_storage(config)
    try:
        assert isinstance(storage, RedisStorage)
        assert storage.connection.url == redis_url
        assert storage.connection.options == _redis.Options(1.0, 2.0, 7)
        pool = storage.connection.client.connection_pool
        assert pool.max_connections == 7
        assert pool.connection_kwargs["socket_timeout"] == 2.0
        assert pool.connection_kwargs["socket_connect_timeout"] == 1.0
        assert storage.heartbeat() is True
    finally:
        storage.close()


def test_load_storage_refuses_a_url_that_is_not_redis():
    config = Configuration.from_mapping({"storage": {"backend": "redis"}})
    with pytest.raises(ConfigError) as info:
        load_storage(config)
    assert str(info.value) == (
        "storage.backend is 'redis' but storage.url is 'kiln.sqlite'. "
        "Set storage.url to a Redis URL, like 'redis://localhost:6379/0'."
    )


def test_a_missing_driver_fails_at_startup_with_the_install_command(monkeypatch, redis_url):
    monkeypatch.setitem(sys.modules, "redis", None)
    config = Configuration.from_mapping({"storage": {"backend": "redis", "url": redis_url}})
    with pytest.raises(ConfigError) as info:
        load_storage(config)
    assert str(info.value) == (
        "storage.backend 'redis' needs the redis-py driver, which is not installed. "
        "Install it with `pip install 'kiln-framework[redis]'`."
    )


@pytest.mark.parametrize(
    "key", ["redis.timeout_seconds", "redis.connect_timeout_seconds", "redis.max_connections"]
)
def test_redis_settings_must_be_positive(key):
    section, name = key.split(".")
    assert validate({section: {name: 0}}) == [f"Config key {key!r} must be greater than 0, got 0."]
    assert validate({section: {name: 3}}) == []
