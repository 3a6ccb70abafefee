from __future__ import annotations

import itertools
import threading
import time

import psycopg
import pytest

import kiln
from kiln._postgresql import SCHEMA_LOCK, PostgreSQLDatabase, cut
from kiln._postgresql.health import HANG_MARGIN, MONITOR_PERIOD
from kiln.exceptions import BackendError
from kiln.storage.postgresql import PostgreSQLStorage
from tests.pgcluster import stopped
from tests.pgschema import fresh_schema
from tests.resource.live_server import Client, serve_in_thread

#: Small timeouts, so that every failure answers within about two seconds.
FAST = {"pool_timeout_seconds": 1, "connect_timeout_seconds": 1, "statement_timeout_ms": 500}
#: The longest any request may take while the database fails: the pool timeout
#: (1 s), or the statement timeout (0.5 s) plus the hang margin (0.5 s) and the
#: monitor's round (0.2 s), with slack for a loaded machine and a request that
#: runs again after a conflict.
BOUND = 2.5


def build_app(url: str):
    return kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {"backend": "postgresql", "url": url, **FAST},
        },
        configure_logging=False,
    )


@pytest.fixture
def served(make_pg_primary):
    primary = make_pg_primary()
    app = build_app(primary.url)
    try:
        yield primary, app
    finally:
        app.extensions["kiln"].storage.close()


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.json
    assert response.json["errno"] == 201
    assert int(response.headers["Retry-After"]) > 0


def timed(call):
    started = time.monotonic()
    rv = call()
    return rv, time.monotonic() - started


def seconds_until_ok(status, limit: float = 5.0) -> float:
    """How long until ``status()`` is 200 (polled every 20 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if status() == 200:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"no 200 within {limit} s")


def test_a_stopped_database_answers_503_with_retry_after_and_the_app_recovers_on_its_own(served):
    primary, app = served
    client = app.test_client()
    record = client.post("/v1/mushrooms", json={"data": {"name": "kept"}}).json["data"]
    primary.stop("fast")
    for call in (
        lambda: client.get("/v1/mushrooms"),
        lambda: client.get(f"/v1/mushrooms/{record['id']}"),
        lambda: client.post("/v1/mushrooms", json={"data": {"name": "lost"}}),
    ):
        response, elapsed = timed(call)
        assert_unavailable(response)
        assert elapsed < BOUND
    primary.start()
    assert seconds_until_ok(lambda: client.get("/v1/mushrooms").status_code) < 2
    assert [r["name"] for r in client.get("/v1/mushrooms").json["data"]] == ["kept"]


def test_a_hung_database_answers_503_within_the_statement_and_connect_timeouts(served):
    primary, app = served
    client = app.test_client()
    assert client.post("/v1/mushrooms", json={"data": {"name": "kept"}}).status_code == 201
    with stopped(primary):
        for call in (
            lambda: client.get("/v1/mushrooms"),
            lambda: client.post("/v1/mushrooms", json={"data": {"name": "lost"}}),
            lambda: client.get("/v1/mushrooms"),
        ):
            response, elapsed = timed(call)
            assert_unavailable(response)
            assert elapsed < BOUND
    assert seconds_until_ok(lambda: client.get("/v1/mushrooms").status_code) < 3
    assert [r["name"] for r in client.get("/v1/mushrooms").json["data"]] == ["kept"]


def test_a_request_waiting_for_a_connection_gets_one_soon_after_the_server_returns(
    make_pg_primary,
):
    primary = make_pg_primary()
    database = PostgreSQLDatabase(primary.url, pool_timeout=10, connect_timeout=1)
    storage = PostgreSQLStorage(database)
    storage.initialize_schema()
    primary.stop("fast")
    answered = []
    waiting = threading.Thread(
        target=lambda: answered.append((storage.collection_timestamp("r", "p"), time.monotonic()))
    )
    waiting.start()
    try:
        time.sleep(1.5)  # the pool tried, failed and stopped retrying on its own
        assert not answered
        primary.start()
        ready = time.monotonic()
        waiting.join(10)
        ((timestamp, at),) = answered
        assert timestamp == 0
        assert at - ready < 1.5
    finally:
        waiting.join(10)
        database.close()


def test_schema_statements_may_wait_past_the_hang_limit(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url, statement_timeout_ms=100, connect_timeout=1)
        try:
            with psycopg.connect(postgresql_url, autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                release = threading.Timer(
                    1.6, lambda: holder.execute("SELECT pg_advisory_unlock_all()")
                )
                release.start()
                (steps, elapsed) = timed(PostgreSQLStorage(database).initialize_schema)
                release.join()
            assert "create table records" in steps
            assert elapsed > 1.4
        finally:
            database.close()


def test_cutting_a_closed_connection_does_nothing(postgresql_url):
    conn = psycopg.connect(postgresql_url)
    conn.close()
    cut(conn)
    assert conn.closed


def test_a_restart_mid_load_loses_no_acknowledged_write_and_2xx_resumes_within_2_s(served):
    primary, app = served
    statuses: list[tuple[int, float, float]] = []
    unavailable: list[tuple[dict, dict]] = []
    acknowledged: dict[str, int] = {}  # record id -> last size a 2xx confirmed
    stop = threading.Event()

    with serve_in_thread(app) as base:
        client = Client(base + "/v1")

        def write(index: int) -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                record_id = None
                for size in range(3):
                    started = time.monotonic()
                    if record_id is None:
                        body = {"data": {"name": f"w{index}-{n}", "size": size}}
                        reply = client.request("POST", "/mushrooms", body)
                    else:
                        body = {"data": {"size": size}}
                        reply = client.request("PATCH", f"/mushrooms/{record_id}", body)
                    statuses.append((reply.status, started, time.monotonic()))
                    if reply.status == 503:
                        unavailable.append((reply.headers, reply.body))
                        break
                    record_id = reply.body["data"]["id"]
                    acknowledged[record_id] = size

        writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for writer in writers:
            writer.start()
        try:
            time.sleep(0.7)
            primary.restart(mode="immediate")
            ready = time.monotonic()
            resumed = seconds_until_ok(lambda: client.get("/mushrooms?_limit=1").status)
            time.sleep(1)
        finally:
            stop.set()
            for writer in writers:
                writer.join(30)
            client.close()
    assert not any(writer.is_alive() for writer in writers)
    assert resumed < 2
    assert {status for status, _, _ in statuses} <= {200, 201, 503}
    for headers, body in unavailable:
        assert body["errno"] == 201
        assert int(headers["Retry-After"]) > 0
    assert max(ended - started for _, started, ended in statuses) < BOUND
    assert any(status < 300 and started > ready for status, started, _ in statuses)
    assert any(started < ready for status, started, _ in statuses if status < 300)
    # Every write a client was told succeeded is there after the crash.
    check = app.test_client()
    stored = {r["id"]: r for r in check.get("/v1/mushrooms").json["data"]}
    for record_id, size in acknowledged.items():
        assert record_id in stored
        assert stored[record_id]["size"] >= size


#: The issue's settings (#15): an operator setting a 2 s statement timeout
#: expects about 2 s on a hung server, whatever the connect timeout.
OPERATOR = {"connect_timeout_seconds": 2, "statement_timeout_ms": 2000}


def test_a_hung_database_answers_each_request_within_the_statement_timeout_and_the_margin(
    make_pg_primary,
):
    primary = make_pg_primary()
    app = kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {"backend": "postgresql", "url": primary.url, **OPERATOR},
        },
        configure_logging=False,
    )
    bound = 2.0 + HANG_MARGIN + MONITOR_PERIOD + 0.5  # the documented bound, plus slack
    client = app.test_client()
    try:
        assert client.post("/v1/mushrooms", json={"data": {"name": "kept"}}).status_code == 201
        record = client.get("/v1/mushrooms").json["data"][0]
        answers: list[tuple[str, object, float]] = []

        def call(name: str, request) -> None:
            answers.append((name, *timed(request)))

        requests = {
            # A write sends BEGIN, the collection's lock and the record in one
            # pipelined round trip: it is bound like a single statement.
            "create": lambda: app.test_client().post(
                "/v1/mushrooms", json={"data": {"name": "lost"}}
            ),
            "patch": lambda: app.test_client().patch(
                f"/v1/mushrooms/{record['id']}", json={"data": {"size": 3}}
            ),
            "list": lambda: app.test_client().get("/v1/mushrooms"),
        }
        with stopped(primary):
            threads = [
                threading.Thread(target=call, args=(name, request))
                for name, request in requests.items()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            # Requests that come after the first cuts (their connections are
            # gone and the pool cannot open any): bound the same way.
            for _ in range(2):
                call("later", requests["list"])
        assert len(answers) == 5
        for name, response, elapsed in answers:
            assert_unavailable(response)
            assert elapsed < bound, (name, elapsed)
        assert seconds_until_ok(lambda: client.get("/v1/mushrooms").status_code, 8) < 8
    finally:
        app.extensions["kiln"].storage.close()


def test_a_pipelined_round_trip_to_a_hung_server_is_cut_like_one_statement(make_pg_primary):
    primary = make_pg_primary()
    database = PostgreSQLDatabase(primary.url, connect_timeout=2, statement_timeout_ms=2000)
    try:
        with database.transaction() as conn:
            database.execute(conn, "SELECT 1")
            database.begin_write(conn)
            with stopped(primary):
                started = time.monotonic()
                with pytest.raises(psycopg.OperationalError):
                    database.pipeline(conn, *[("SELECT 1", None)] * 5)
                elapsed = time.monotonic() - started
    except BackendError:
        pass  # the rollback of the cut connection
    finally:
        database.close()
    assert 2.0 <= elapsed < 2.0 + HANG_MARGIN + MONITOR_PERIOD + 0.5


def test_without_a_statement_timeout_no_round_trip_is_cut(postgresql_url):
    database = PostgreSQLDatabase(postgresql_url, statement_timeout_ms=0, pool_timeout=0.3)
    try:
        assert database.hang_limit() == float("inf")
        with database.transaction() as conn:
            # Longer than the pool timeout: only the pool's wait is bound by it.
            database.execute(conn, "SELECT pg_sleep(0.5)")
    finally:
        database.close()
    assert PostgreSQLDatabase(postgresql_url, statement_timeout_ms=1500).hang_limit() == (
        1.5 + HANG_MARGIN
    )
