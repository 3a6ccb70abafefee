from __future__ import annotations

import base64
import contextlib
import gc
import itertools
import logging
import os
import threading
import time
import uuid

import psycopg
import pytest
from psycopg.errors import SerializationFailure

import kiln
from kiln._postgresql import (
    PostgreSQLDatabase,
    ReadReplicas,
    ReplicaUnavailable,
    parse_lsn,
)
from kiln.exceptions import ConfigError
from tests.pgcluster import stopped
from tests.pgschema import CLOSED_PORT_URL

SECRET = "replica-secret-" + "r" * 40
_names = itertools.count()

#: Settings that make the tests quick: lag measured often, failures seen fast.
FAST = {
    "replica_check_seconds": 0.05,
    "replica_retry_seconds": 0.2,
    "pool_timeout_seconds": 1,
    "connect_timeout_seconds": 1,
    "statement_timeout_ms": 300,
}


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ALICE, BOB = basic("alice"), basic("bob")


def wait_until(condition, timeout: float = 10.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rv = condition()
        if rv:
            return rv
        time.sleep(0.02)
    raise AssertionError(f"{message} not met within {timeout} s")


def sql(url: str, statement: str):
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchone() if cursor.description else None


@contextlib.contextmanager
def replay_paused(replica_url: str):
    """The replica receives WAL but applies none of it: it lags, and serves old data."""
    sql(replica_url, "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        sql(replica_url, "SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def servers(pg_primary, pg_replica):
    """A database of this module on the session's primary and its replica."""
    name = f"kiln_replicas_{uuid.uuid4().hex[:8]}"
    pg_primary.create_database(name)
    pg_replica.wait_until_caught_up()
    return pg_primary, pg_replica, name


def _unique(url: str) -> str:
    # A URL of its own: the app gets its own shared database, pool and replicas.
    return f"{url}?application_name=kiln-replicas-{os.getpid()}-{next(_names)}"


@pytest.fixture
def make_app(servers):
    primary, replica, name = servers
    built = []

    def build(primary_url=None, read_urls=None, **storage):
        url = _unique(primary_url or primary.url_for(name))
        urls = [replica.url_for(name)] if read_urls is None else read_urls
        app = kiln.create_app(
            {
                "views": ["tests.resource.sample_resources"],
                "storage": {"backend": "postgresql", "url": url, "read_urls": urls}
                | FAST
                | storage,
                "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
            },
            configure_logging=False,
        )
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["kiln"].storage.close()


def replicas_of(app) -> ReadReplicas:
    replicas = app.extensions["kiln"].storage.database.replicas
    assert replicas is not None
    return replicas


def _no_records(conn) -> bool:
    try:
        return conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
    except psycopg.errors.UndefinedTable:
        return False  # the replica has not replayed the schema yet


def reading_from_replica(app) -> None:
    """Start with an empty collection, replayed, and a replica fresh enough to serve."""
    storage = app.extensions["kiln"].storage
    storage.flush()
    replicas = replicas_of(app)
    for replica in replicas.replicas:
        with psycopg.connect(replica.database.url, autocommit=True) as conn:
            wait_until(lambda conn=conn: _no_records(conn), message="the replica replays the flush")
    wait_until(replicas.pick, message="a fresh replica")


def names(response) -> list[str]:
    return sorted(record["name"] for record in response.json["data"])


# -- reads on the replica ------------------------------------------------------------


def test_reads_are_served_by_the_replica_and_the_primary_takes_the_writes(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60)
    client = app.test_client()
    reading_from_replica(app)
    assert (
        client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).status_code == 201
    )
    replica.wait_until_caught_up()
    with replay_paused(replica.url_for(name)):
        created = client.post("/v1/mushrooms", json={"data": {"name": "b"}}, headers=ALICE)
        assert created.status_code == 201
        # Bob reads from the replica, which has not applied the second write.
        listed = client.get("/v1/mushrooms", headers=BOB)
        assert listed.status_code == 200
        assert names(listed) == ["a"]
        head = client.head("/v1/mushrooms", headers=BOB)
        assert head.headers["Total-Records"] == "1"
        assert head.headers["ETag"] == listed.headers["ETag"]
        record = created.json["data"]
        assert client.get(f"/v1/mushrooms/{record['id']}", headers=BOB).status_code == 404
    replica.wait_until_caught_up()
    assert names(client.get("/v1/mushrooms", headers=BOB)) == ["a", "b"]


def test_a_client_that_sent_a_newer_timestamp_is_answered_by_the_primary(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60)
    client = app.test_client()
    reading_from_replica(app)
    first = client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).json["data"]
    replica.wait_until_caught_up()
    with replay_paused(replica.url_for(name)):
        second = client.post("/v1/mushrooms", json={"data": {"name": "b"}}, headers=ALICE)
        etag = second.headers["ETag"]
        record = second.json["data"]
        # What the replica has is as new as what the client saw: it answers.
        since_first = client.get(f"/v1/mushrooms?_since={first['last_modified']}", headers=BOB)
        assert since_first.json["data"] == []
        # Newer than what the replica has: the primary answers, with the new record.
        since = client.get(f"/v1/mushrooms?_since={first['last_modified'] + 1}", headers=BOB)
        assert names(since) == ["b"]
        assert client.get("/v1/mushrooms?_before=" + etag.strip('"'), headers=BOB).json["data"] == [
            first
        ]
        assert client.get("/v1/mushrooms?_to=" + etag.strip('"'), headers=BOB).status_code == 200
        unchanged = client.get("/v1/mushrooms", headers={**BOB, "If-None-Match": etag})
        assert unchanged.status_code == 304
        assert unchanged.headers["ETag"] == etag
        path = f"/v1/mushrooms/{record['id']}"
        assert client.get(path, headers={**BOB, "If-None-Match": etag}).status_code == 304
        newer = f'"{record["last_modified"] - 1}"'
        assert client.get(path, headers={**BOB, "If-None-Match": newer}).status_code == 200
        # Neither "*" nor a malformed value says what the client saw: the replica answers.
        assert names(client.get("/v1/mushrooms", headers={**BOB, "If-None-Match": "*"})) == ["a"]
        assert client.get("/v1/mushrooms?_since=²", headers=BOB).status_code == 400
        assert client.get("/v1/mushrooms?_since=" + "9" * 25, headers=BOB).status_code < 500


def test_storage_reads_on_a_replica_behind_what_the_client_saw_run_on_the_primary(
    servers, make_app
):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60)
    storage = app.extensions["kiln"].storage
    reading_from_replica(app)
    first = storage.create("mushroom", "", {"name": "a"})
    replica.wait_until_caught_up()

    def read(work, seen):
        return storage.route_request(
            work, method="GET", if_match=False, resource_name="mushroom", user_id=None, seen=seen
        )

    def timestamp():
        return storage.collection_timestamp("mushroom", "")

    def records():
        return storage.get_records([("mushroom", "", first["id"])])

    with replay_paused(replica.url_for(name)):
        second = storage.update("mushroom", "", first["id"], {"name": "b"})
        # What the client saw, the replica has: it answers, with its older state.
        assert read(timestamp, first["last_modified"]) == first["last_modified"]
        assert read(records, first["last_modified"]) == [first]
        # The client saw the update, which the replica lacks: the primary answers.
        assert read(timestamp, second["last_modified"]) == second["last_modified"]
        assert read(records, second["last_modified"]) == [second]


def test_a_callers_reads_go_to_the_primary_for_a_while_after_they_write(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60, read_your_writes_seconds=0.5)
    client = app.test_client()
    reading_from_replica(app)
    with replay_paused(replica.url_for(name)):
        assert (
            client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).status_code
            == 201
        )
        written = time.monotonic()
        mine = client.get("/v1/mushrooms", headers=ALICE)
        assert time.monotonic() - written < 0.5
        assert names(mine) == ["a"]
        assert names(client.get("/v1/mushrooms", headers=BOB)) == []
        # After the window, Alice reads from the replica too.
        time.sleep(max(0.0, written + 0.55 - time.monotonic()))
        assert names(client.get("/v1/mushrooms", headers=ALICE)) == []


def test_anonymous_writers_share_one_read_your_writes_window(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60, read_your_writes_seconds=30)
    client = app.test_client()
    reading_from_replica(app)
    with replay_paused(replica.url_for(name)):
        assert client.post("/v1/mushrooms", json={"data": {"name": "a"}}).status_code == 201
        assert names(client.get("/v1/mushrooms")) == ["a"]
        assert names(client.get("/v1/mushrooms", headers=BOB)) == []


def test_without_a_read_your_writes_window_a_writer_reads_from_the_replica(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60, read_your_writes_seconds=0)
    client = app.test_client()
    reading_from_replica(app)
    with replay_paused(replica.url_for(name)):
        assert (
            client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).status_code
            == 201
        )
        assert names(client.get("/v1/mushrooms", headers=ALICE)) == []


def test_if_match_and_batches_read_from_the_primary(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60, read_your_writes_seconds=0)
    client = app.test_client()
    reading_from_replica(app)
    with replay_paused(replica.url_for(name)):
        created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE)
        record, etag = created.json["data"], created.headers["ETag"]
        path = f"/v1/mushrooms/{record['id']}"
        assert client.get(path, headers=BOB).status_code == 404
        assert client.get(path, headers={**BOB, "If-Match": etag}).json["data"] == record
        batch = client.post(
            "/v1/batch", json={"requests": [{"method": "GET", "path": path}]}, headers=BOB
        )
        assert batch.json["responses"][0]["status"] == 200


def test_a_request_that_writes_reads_its_writes_from_the_primary(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=60, read_your_writes_seconds=0)
    reading_from_replica(app)
    storage = app.extensions["kiln"].storage

    def write_then_read():
        with storage.transaction():
            storage.create("mushroom", "", {"id": "w", "name": "w"})
            return storage.get("mushroom", "", "w")

    with replay_paused(replica.url_for(name)):
        read = storage.route_request(
            write_then_read,
            method="GET",
            if_match=False,
            resource_name="mushroom",
            user_id=None,
            seen=None,
        )
        assert read["name"] == "w"


# -- lag -----------------------------------------------------------------------------


def test_a_replica_lagging_beyond_the_setting_is_bypassed_until_it_catches_up(servers, make_app):
    _, replica, name = servers
    app = make_app(replica_max_lag_seconds=0.3, read_your_writes_seconds=0)
    client = app.test_client()
    reading_from_replica(app)
    replicas = replicas_of(app)
    with replay_paused(replica.url_for(name)):
        paused = time.monotonic()
        assert (
            client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).status_code
            == 201
        )
        # The replica cannot have it: once it lags more than 0.3 s, the primary answers.
        wait_until(
            lambda: names(client.get("/v1/mushrooms", headers=BOB)) == ["a"],
            timeout=5,
            message="reads bypass the lagging replica",
        )
        assert time.monotonic() - paused < 2
        assert replicas.pick() is None
    wait_until(replicas.pick, timeout=5, message="the replica serves again")


def test_the_lag_is_measured_from_the_primarys_wal_position_not_from_clocks(servers):
    primary, replica, name = servers
    database = PostgreSQLDatabase(primary.url_for(name))
    replicas = database.use_replicas([replica.url_for(name)], max_lag=60, check_interval=60)
    try:
        assert database.use_replicas(["postgresql://elsewhere/db"]) is replicas
        (measured,) = replicas.replicas
        replica.wait_until_caught_up()
        before = time.monotonic()
        replicas.check()
        assert measured.fresh_as_of >= before
        with replay_paused(replica.url_for(name)):
            sql(primary.url_for(name), "CREATE TABLE lag_probe (n int)")
            time.sleep(0.05)
            replicas.check()
            # Still fresh as of the first sample, not the second (its WAL is not replayed).
            assert before <= measured.fresh_as_of < before + 0.05
    finally:
        sql(primary.url_for(name), "DROP TABLE IF EXISTS lag_probe")
        database.close()


def test_a_primary_listed_as_a_replica_is_always_fresh(servers, make_app):
    primary, _, name = servers
    app = make_app(read_urls=[primary.url_for(name)], read_your_writes_seconds=0)
    client = app.test_client()
    reading_from_replica(app)
    assert (
        client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=ALICE).status_code == 201
    )
    assert names(client.get("/v1/mushrooms", headers=BOB)) == ["a"]


def test_without_the_primary_no_replica_is_known_to_be_fresh(servers):
    _, replica, name = servers
    database = PostgreSQLDatabase(CLOSED_PORT_URL, pool_timeout=0.2, connect_timeout=1)
    replicas = database.use_replicas([replica.url_for(name)], max_lag=60, check_interval=60)
    try:
        replicas.check()
        assert replicas.replicas[0].fresh_as_of == float("-inf")
        assert replicas.pick() is None
    finally:
        database.close()


# -- failures ------------------------------------------------------------------------


def test_reads_fail_over_to_the_primary_when_the_replica_stops_and_return_when_it_is_back(
    make_pg_primary,
):
    primary = make_pg_primary()
    replica = primary.start_replica()
    app = kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {
                "backend": "postgresql",
                "url": primary.url,
                "read_urls": [replica.url],
                "read_your_writes_seconds": 0,
                **FAST,
            },
        },
        configure_logging=False,
    )
    try:
        client = app.test_client()
        replicas = replicas_of(app)
        assert client.post("/v1/mushrooms", json={"data": {"name": "a"}}).status_code == 201
        replica.wait_until_caught_up()
        wait_until(replicas.pick, message="a fresh replica")
        assert names(client.get("/v1/mushrooms")) == ["a"]
        replica.stop("fast")
        started = time.monotonic()
        for _ in range(5):
            listed = client.get("/v1/mushrooms")
            assert listed.status_code == 200, listed.json
            assert names(listed) == ["a"]
        # At most one wait for the pool (1 s), then the replica is left alone.
        assert time.monotonic() - started < 2.5
        assert replicas.pick() is None
        replica.start()
        wait_until(replicas.pick, timeout=10, message="the replica serves again")
        assert names(client.get("/v1/mushrooms")) == ["a"]
    finally:
        app.extensions["kiln"].storage.close()


def test_a_hung_replica_is_bypassed_within_the_statement_and_connect_timeouts(
    servers, make_app, caplog
):
    _, replica, _ = servers
    app = make_app(read_your_writes_seconds=0)
    client = app.test_client()
    reading_from_replica(app)
    assert client.post("/v1/mushrooms", json={"data": {"name": "a"}}).status_code == 201
    replica.wait_until_caught_up()
    replicas = replicas_of(app)
    wait_until(lambda: replicas.pick() and names(client.get("/v1/mushrooms")) == ["a"])
    caplog.set_level(logging.WARNING, logger="kiln.postgresql")
    with stopped(replica):
        started = time.monotonic()
        listed = client.get("/v1/mushrooms")
        elapsed = time.monotonic() - started
        assert listed.status_code == 200
        assert names(listed) == ["a"]
        # 0.3 s statement timeout + 1 s connect timeout + the monitor's round.
        assert elapsed < 2.5
        assert replicas.pick() is None
    assert "Reading from the primary" in caplog.text
    wait_until(replicas.pick, timeout=10, message="the replica serves again")


def test_a_conflict_with_recovery_sends_the_request_to_the_primary_without_marking_it_down(
    servers,
):
    primary, replica, name = servers
    database = PostgreSQLDatabase(primary.url_for(name))
    standby = PostgreSQLDatabase(replica.url_for(name), replica_of=database)
    conflict = standby.error(SerializationFailure("conflict with recovery"))
    assert isinstance(conflict, ReplicaUnavailable)
    assert not conflict.failed
    assert standby.error(psycopg.OperationalError("gone")).failed
    replicas = database.use_replicas([replica.url_for(name)], max_lag=60, check_interval=60)
    try:
        replicas.check()
        (chosen,) = replicas.replicas
        assert replicas.pick() is chosen
        calls = []

        def work():
            calls.append(database.reader())
            if len(calls) == 1:
                raise conflict
            return "answered"

        assert database.route(work, method="GET") == "answered"
        assert calls == [chosen.database, database]
        assert replicas.pick() is chosen
    finally:
        database.close()
        standby.close()


# -- bookkeeping ---------------------------------------------------------------------


def test_read_your_writes_remembers_recent_writers_only():
    database = PostgreSQLDatabase(CLOSED_PORT_URL)
    replicas = database.use_replicas([CLOSED_PORT_URL], read_your_writes=0.05)
    try:
        for index in range(1023):
            replicas.wrote(f"user-{index}")
        assert replicas.wrote_recently("user-7")
        time.sleep(0.06)
        assert not replicas.wrote_recently("user-7")
        replicas.wrote(None)
        assert replicas.wrote_recently(None)
        assert len(replicas._writes) == 1
    finally:
        database.close()


def test_the_checker_thread_ends_with_its_replicas(servers):
    primary, replica, name = servers

    def checkers():
        return [t for t in threading.enumerate() if t.name.startswith("kiln PostgreSQL replicas")]

    before = len(checkers())
    database = PostgreSQLDatabase(primary.url_for(name))
    replicas = database.use_replicas([replica.url_for(name)], check_interval=0.02)
    wait_until(replicas.pick, message="a fresh replica")
    assert len(checkers()) == before + 1
    database.close()
    wait_until(lambda: len(checkers()) == before, message="the checker ends when closed")
    assert replicas.pick() is None
    assert len(checkers()) == before
    # Forgotten without being closed, it ends too.
    replicas = ReadReplicas(
        database,
        [],
        max_lag=1,
        check_interval=0.02,
        retry_interval=1,
        read_your_writes=1,
    )
    replicas.pick()
    assert len(checkers()) == before + 1
    del replicas
    gc.collect()
    wait_until(lambda: len(checkers()) == before, message="the checker ends when forgotten")
    # Closed before its first request, it starts none.
    unused = ReadReplicas(
        database, [], max_lag=1, check_interval=0.02, retry_interval=1, read_your_writes=1
    )
    unused.close()
    assert unused.pick() is None
    assert len(checkers()) == before


def test_read_urls_must_be_a_list_of_urls(make_app):
    with pytest.raises(ConfigError, match=r"storage\.read_urls"):
        make_app(read_urls=["postgresql://h/db", 3])
    with pytest.raises(ConfigError, match="not a PostgreSQL connection URL"):
        make_app(read_urls=["replica.sqlite"])


def test_without_read_urls_every_request_uses_the_primary(servers, make_app):
    app = make_app(read_urls=[])
    assert app.extensions["kiln"].storage.database.replicas is None
    client = app.test_client()
    assert client.post("/v1/mushrooms", json={"data": {"name": "z"}}).status_code == 201
    assert client.get("/v1/mushrooms").status_code == 200


def test_wal_positions_order_as_numbers():
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
