from __future__ import annotations

import collections
import contextlib
import gc
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
import uuid
import weakref

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import kiln
from kiln._postgresql import describe
from kiln.auth import AuthenticationPolicy
from kiln.config import Configuration
from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import ConfigError, TransientBackendError
from kiln.metrics import (
    CATALOGUE,
    POOL_WAIT_FLOOR,
    REQUEST_DURATION,
    Exporter,
    Metrics,
    PrometheusExporter,
    StatsDExporter,
    Tally,
    _call,
    _counter_adder,
    _histogram_adder,
    _segment,
    build_metrics,
    instrument_backend,
)
from kiln.resource.events import subscribe
from kiln.stats import MAX_DATAGRAM
from tests.pgschema import fresh_schema
from tests.test_cli import clean_env, free_port, http_get, running, write
from tests.test_wsgi import gunicorn_args

VIEWS = ["tests.resource.sample_resources"]
SECRET = "metrics-secret-" + "x" * 32


class Sink:
    """A loopback statsd server: the lines it received."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.url = f"udp://127.0.0.1:{self.socket.getsockname()[1]}"

    def datagrams(self) -> list[bytes]:
        # A request's metrics are exported before its response (exported_at_once):
        # they are here already.
        received = []
        while True:
            try:
                received.append(self.socket.recv(65536))
            except BlockingIOError:
                return received

    def lines(self) -> list[str]:
        return [line for data in self.datagrams() for line in data.decode().splitlines()]


@pytest.fixture
def sink():
    server = Sink()
    yield server
    server.socket.close()


@pytest.fixture(autouse=True)
def exported_at_once(monkeypatch):
    """Tallies built by a test export at the end of each request, not each second."""
    monkeypatch.setattr(kiln.metrics, "EXPORT_SECONDS", 0)


@pytest.fixture(autouse=True)
def built():
    apps = []
    yield apps
    for app in apps:
        kiln.application.close_app(app)


@pytest.fixture
def build(tmp_path, built):
    def build_app(metrics, *, flask_path=False, views=VIEWS, **settings):
        app = make(tmp_path, metrics, flask_path=flask_path, views=views, **settings)
        built.append(app)
        return app

    return build_app


def make(tmp_path, metrics, *, flask_path=False, views=VIEWS, **settings):
    app = kiln.create_app(
        {
            "views": views,
            "storage": {"backend": "sqlite", "url": str(tmp_path / "m.sqlite")},
            "metrics": metrics,
            **settings,
        },
        configure_logging=False,
    )
    if flask_path:
        # A hook kiln did not install: resource requests go through Flask.
        app.before_request(lambda: None)
    return app


def counters(lines):
    """``name -> total`` of the counter lines; other lines are left out."""
    totals: collections.Counter[str] = collections.Counter()
    for line in lines:
        name, _, rest = line.partition(":")
        value, kind = rest.split("|")[:2]
        if kind == "c":
            totals[name] += int(value)
    return dict(totals)


def as_statsd(samples):
    """Prometheus's counters and histogram counts, named as StatsD names them."""
    by_name = {metric.name: metric for metric in CATALOGUE}
    totals, counts = {}, {}
    for (name, labels), value in samples.items():
        for suffix, found in (("_total", totals), ("_seconds_count", counts)):
            if name.endswith(suffix):
                metric = by_name[name.removeprefix("kiln_").removesuffix(suffix)]
                values = dict(labels)
                segments = [_segment(values[label]) for label in metric.labels]
                found[".".join(["kiln", metric.name, *segments])] = value
    return totals, counts


def timers(lines):
    """The names of the timer lines, with how many there were."""
    return collections.Counter(
        line.partition(":")[0] for line in lines if line.split("|")[1] == "ms"
    )


@pytest.mark.parametrize("flask_path", [False, True], ids=["fast path", "flask path"])
def test_a_scripted_set_of_requests_sends_exactly_these_statsd_metrics(
    tmp_path, build, sink, flask_path, caplog
):
    app = build({"statsd_url": sink.url, "prometheus": True}, flask_path=flask_path)
    client = app.test_client()
    assert sink.lines() == []  # building the app sends nothing
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}})
    assert created.status_code == 201
    record = f"/v1/mushrooms/{created.json['data']['id']}"
    assert client.get(record).status_code == 200
    assert client.get("/v1/mushrooms").status_code == 200
    assert client.patch(record, json={"data": {"edible": True}}).status_code == 200
    assert client.get(f"/v1/mushrooms/{uuid.uuid4()}").status_code == 404
    assert client.delete(record).status_code == 200
    batch = client.post(
        "/v1/batch",
        json={
            "requests": [
                {"method": "POST", "path": "/mushrooms", "body": {"data": {"name": "b"}}},
                {"path": "/mushrooms"},
                {"path": "/"},
            ]
        },
    )
    assert [r["status"] for r in batch.json["responses"]] == [201, 200, 200]
    assert client.get("/v1/").status_code == 200
    assert client.get("/v1/nowhere").status_code == 404
    with contextlib.closing(sqlite3.connect(tmp_path / "m.sqlite")) as db:
        db.execute("DROP TABLE records")  # the database fails from now on
    with caplog.at_level(logging.ERROR, "kiln"):
        failed = client.get("/v1/mushrooms")
    assert failed.status_code == 503
    lines = sink.lines()

    assert counters(lines) == {
        "kiln.batch_subrequests.POST.v1_mushrooms.201": 1,
        "kiln.batch_subrequests.GET.v1_mushrooms.200": 1,
        "kiln.batch_subrequests.GET.v1.200": 1,
        "kiln.resource_actions.mushroom.create.201": 2,
        "kiln.resource_actions.mushroom.get.200": 1,
        "kiln.resource_actions.mushroom.list.200": 2,
        "kiln.resource_actions.mushroom.update.200": 1,
        "kiln.resource_actions.mushroom.get.404": 1,
        "kiln.resource_actions.mushroom.delete.200": 1,
        "kiln.resource_actions.batch.batch.200": 1,
        "kiln.resource_actions.mushroom.list.503": 1,
        "kiln.authentications.none.anonymous": 10,
        "kiln.backend_errors.storage.list_page": 1,
    }
    durations = timers(lines)
    # A request's timer counts it: there is no request counter besides.
    assert {name: n for name, n in durations.items() if ".request_duration." in name} == {
        "kiln.request_duration.POST.v1_mushrooms.201": 1,
        "kiln.request_duration.GET.v1_mushrooms_id.200": 1,
        "kiln.request_duration.GET.v1_mushrooms.200": 1,
        "kiln.request_duration.PATCH.v1_mushrooms_id.200": 1,
        "kiln.request_duration.GET.v1_mushrooms_id.404": 1,
        "kiln.request_duration.DELETE.v1_mushrooms_id.200": 1,
        "kiln.request_duration.POST.v1_batch.200": 1,
        "kiln.request_duration.GET.v1.200": 1,
        "kiln.request_duration.GET.unmatched.404": 1,
        "kiln.request_duration.GET.v1_mushrooms.503": 1,
    }
    # Prometheus counted the same (its label values in StatsD's form).
    prometheus_counters, prometheus_timers = as_statsd(scrape(client))
    assert prometheus_counters == counters(lines)
    assert prometheus_timers == durations
    backend = {name for name in durations if ".backend_duration." in name}
    assert {
        "kiln.backend_duration.storage.apply",
        "kiln.backend_duration.storage.get",
        "kiln.backend_duration.storage.list_page",
    } <= backend
    assert all(name.startswith("kiln.backend_duration.storage.") for name in backend)
    # The error log of the failure names the request, as its response does.
    [error] = [r for r in caplog.records if r.getMessage().startswith("Backend failure")]
    assert error.fields == {"rid": failed.headers["X-Request-Id"]}


def test_statsd_tags_in_the_dogstatsd_style(build, sink):
    client = build({"statsd_url": sink.url, "statsd_tags": "dogstatsd"}).test_client()
    client.get("/v1/mushrooms")
    lines = sink.lines()
    assert "kiln.resource_actions:1|c|#resource:mushroom,action:list,status:200" in lines
    assert "kiln.authentications:1|c|#policy:none,outcome:anonymous" in lines
    [duration] = [line for line in lines if line.startswith("kiln.request_duration:")]
    assert duration.endswith("|ms|#method:GET,route:/v1/mushrooms,status:200")


def test_statsd_tags_in_the_telegraf_style_and_a_prefix(build, sink):
    metrics = {"statsd_url": sink.url, "statsd_tags": "telegraf", "statsd_prefix": "svc"}
    client = build(metrics).test_client()
    client.get("/v1/mushrooms/<x>")
    lines = sink.lines()
    [duration] = [line for line in lines if line.startswith("svc.request_duration,")]
    tags = "method=GET,route=/v1/mushrooms/<id>,status=400"
    assert duration.startswith(f"svc.request_duration,{tags}:")
    assert duration.endswith("|ms")


def test_an_empty_prefix_and_an_unknown_method(build, sink):
    client = build({"statsd_url": sink.url, "statsd_prefix": ""}).test_client()
    client.open("/v1/mushrooms", method="BREW")
    # Flask matched no rule for the method: the route is not known.
    assert timers(sink.lines())["request_duration.other.unmatched.405"] == 1


def test_authentication_outcomes_and_hashed_unique_users(build, sink):
    auth = {"policies": ["basicauth"], "userid_hmac_secret": SECRET}
    client = build(
        {"statsd_url": sink.url},
        views=["tests.resource.auth_resources"],
        auth=auth,
        toadstool={"create_principals": ["system.Authenticated"]},
    ).test_client()
    alice = {"Authorization": "Basic YWxpY2U6cHc="}  # alice:pw
    client.get("/v1/toadstools", headers=alice)
    client.get("/v1/", headers=alice)
    assert client.post("/v1/toadstools", json={"data": {}}).status_code == 401
    lines = sink.lines()
    assert counters(lines)["kiln.authentications.basicauth.success"] == 2
    assert counters(lines)["kiln.authentications.none.failure"] == 1
    users = [line for line in lines if line.endswith("|s")]
    assert len(users) == 2
    assert len(set(users)) == 1
    value = users[0].partition(":")[2].partition("|")[0]
    assert len(value) == 24
    assert int(value, 16) >= 0
    assert "alice" not in users[0]


class TokenPolicy(AuthenticationPolicy):
    """``Bearer good`` is user ``u``; any other bearer token is refused."""

    name = "token"

    def __init__(self, config):
        pass

    def authenticated_userid(self, headers):
        token = headers.get("Authorization", "")
        if not token.startswith("Bearer "):
            return None
        if token == "Bearer good":
            return "u"
        raise HTTPError(401, ERRORS.INVALID_AUTH_TOKEN, "Unknown token.")


@pytest.mark.parametrize("flask_path", [False, True], ids=["fast path", "flask path"])
def test_a_failure_names_the_policy_that_refused_the_credentials(build, sink, flask_path):
    client = build(
        {"statsd_url": sink.url},
        flask_path=flask_path,
        auth={"policies": ["tests.test_metrics.TokenPolicy"]},
    ).test_client()
    bad = {"Authorization": "Bearer bad"}
    assert client.get("/v1/mushrooms", headers=bad).status_code == 401
    assert client.get("/v1/", headers=bad).status_code == 401  # a Flask route
    assert client.get("/v1/mushrooms", headers={"Authorization": "Bearer good"}).status_code == 200
    batch = client.post(
        "/v1/batch",
        json={"requests": [{"path": "/mushrooms", "headers": bad}]},
    )
    assert batch.json["responses"][0]["status"] == 401
    assert counters(sink.lines()) == {
        "kiln.authentications.token.failure": 2,
        "kiln.authentications.token.success": 1,
        "kiln.authentications.none.anonymous": 1,  # the batch itself
        "kiln.resource_actions.mushroom.list.401": 2,
        "kiln.resource_actions.mushroom.list.200": 1,
        "kiln.resource_actions.batch.batch.200": 1,
        "kiln.batch_subrequests.GET.v1_mushrooms.401": 1,
    }


def test_retries_events_and_reloads_are_counted(build, built, sink, monkeypatch):
    app = build({"statsd_url": sink.url})
    seen = []
    subscribe(app, seen.append)

    @subscribe(app, actions=["create"])
    def broken(event):
        raise RuntimeError("listener bug")

    storage = kiln.application.state_of(app).storage
    real = storage.apply
    calls = []

    def aborting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientBackendError("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "apply", aborting)
    assert app.test_client().post("/v1/mushrooms", json={"data": {"name": "a"}}).status_code == 201
    kiln.application.state_of(app).config.reload()
    totals = counters(sink.lines())
    assert totals["kiln.unit_of_work_retries.transient"] == 1
    assert totals["kiln.events.delivered"] == 1
    assert totals["kiln.events.failed"] == 1
    assert totals["kiln.config_reloads.success"] == 1
    # Closing the app stops counting its configuration's reloads.
    config = kiln.application.state_of(app).config
    kiln.application.close_app(app)
    built.remove(app)
    config.reload()
    assert counters(sink.lines()) == {}


def test_failed_reloads_are_counted(tmp_path, built, sink, caplog):
    path = write(
        tmp_path / "c.yaml",
        f"views: {VIEWS}\nstorage: {{backend: memory}}\nmetrics: {{statsd_url: '{sink.url}'}}\n",
    )
    config = Configuration(paths=[str(path)], environ={})
    app = kiln.create_app(config, configure_logging=False)
    built.append(app)
    write(path, "views: [")  # broken YAML: the reload is refused
    with caplog.at_level(logging.ERROR, "kiln.config"):
        assert config.reload() is False
    assert counters(sink.lines()) == {"kiln.config_reloads.failure": 1}
    kiln.application.close_app(app)
    built.remove(app)
    config.reload()
    assert sink.lines() == []  # no longer counted


def test_a_statsd_server_that_is_down_neither_fails_nor_slows_requests(build, caplog):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{closed.getsockname()[1]}"
    client = build({"statsd_url": url}).test_client()
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, "kiln.stats"):
        for _ in range(20):
            assert client.get("/v1/mushrooms").status_code == 200
    assert time.perf_counter() - started < 5
    # Sends fail (the port refuses them), and that is said once.
    assert [r.getMessage()[:26] for r in caplog.records] == ["Could not send stats to 12"]


@pytest.mark.parametrize(
    "url", ["tcp://127.0.0.1:8125", "udp://127.0.0.1", "localhost:8125", "udp://:8125"]
)
def test_a_statsd_url_that_is_not_udp_host_port_is_refused(build, url):
    with pytest.raises(ConfigError, match="use udp://host:port"):
        build({"statsd_url": url})


def test_unknown_statsd_tags_are_refused(build):
    with pytest.raises(ConfigError, match="statsd_tags"):
        build({"statsd_url": "udp://127.0.0.1:8125", "statsd_tags": "influx"})


def test_metrics_are_off_by_default():
    assert build_metrics(Configuration.from_mapping({})) is None
    app = kiln.create_app({}, configure_logging=False)
    assert kiln.application.state_of(app).metrics is None
    assert app.test_client().get("/__metrics__").status_code == 404


def test_a_negative_gauge_goes_through_zero_and_a_gauge_sends_its_last_value(sink):
    tally = Tally([StatsDExporter(sink.url)])
    gauge = CATALOGUE[0]._replace(name="queue", kind="gauge", labels=())
    tally.gauge(gauge, (), -3)
    tally.export()
    tally.gauge(gauge, (), 1234567)
    tally.gauge(gauge, (), 2.5)
    tally.close()  # exports what is left
    assert sink.lines() == ["kiln.queue:0|g", "kiln.queue:-3|g", "kiln.queue:2.5|g"]
    tally.close()


# --------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------


def scrape(client, **kwargs):
    response = client.get("/__metrics__", **kwargs)
    assert response.status_code == 200, response.json
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_prometheus_and_statsd_at_once(build, sink):
    client = build({"statsd_url": sink.url, "prometheus": True}).test_client()
    client.get("/v1/mushrooms")
    client.get("/v1/mushrooms")
    samples = scrape(client)
    labels = (("method", "GET"), ("route", "/v1/mushrooms"), ("status", "200"))
    assert samples[("kiln_request_duration_seconds_count", labels)] == 2
    assert not any(name == "kiln_requests_total" for name, _ in samples)
    assert (
        samples[("kiln_authentications_total", (("outcome", "anonymous"), ("policy", "none")))] == 2
    )
    assert timers(sink.lines())["kiln.request_duration.GET.v1_mushrooms.200"] == 2


def test_metrics_need_the_token_when_one_is_set(build):
    metrics = {"prometheus": True, "prometheus_token": "s3cret"}
    client = build(metrics).test_client()
    assert client.get("/__metrics__").status_code == 401
    wrong = client.get("/__metrics__", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json["errno"] == 104
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    samples = scrape(client, headers={"Authorization": "Bearer s3cret"}, environ_overrides=remote)
    assert any(name == "kiln_request_duration_seconds_count" for name, _ in samples)


def test_metrics_are_served_to_loopback_clients_only_without_a_token(build):
    client = build({"prometheus": True}).test_client()
    refused = client.get("/__metrics__", environ_overrides={"REMOTE_ADDR": "203.0.113.9"})
    assert refused.status_code == 403
    assert refused.json["errno"] == 121
    assert scrape(client, environ_overrides={"REMOTE_ADDR": "::1"})


def test_a_prometheus_gauge(build):
    depth = CATALOGUE[0]._replace(name="depth", kind="gauge", labels=())
    prometheus = PrometheusExporter([])  # declared when first exported
    tally = Tally([prometheus])
    tally.gauge(depth, (), 3)
    tally.export()
    tally.gauge(depth, (), 4)
    tally.unique(CATALOGUE[0]._replace(kind="set"), "ignored")
    tally.export()
    assert prometheus._declare(CATALOGUE[1]) is prometheus._declare(CATALOGUE[1])
    body, content_type = prometheus.exposition()
    assert b"kiln_depth 4.0" in body
    assert content_type.startswith("text/plain")


MUSHROOM_VIEWS = """\
from kiln import resource


@resource.register()
class Mushroom(resource.Resource):
    schema = None
"""


def test_gunicorn_workers_metrics_are_added_up_on_metrics(tmp_path):
    write(tmp_path / "mushroom_views.py", MUSHROOM_VIEWS)
    write(
        tmp_path / "c.yaml",
        "views: [mushroom_views]\nstorage: {backend: memory}\nmetrics: {prometheus: true}\n",
    )
    shared = tmp_path / "prometheus"
    shared.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(KILN_CONFIG="c.yaml", PROMETHEUS_MULTIPROC_DIR=str(shared))
    args = gunicorn_args("kiln.wsgi:application", port)
    args[args.index("--workers") + 1] = "2"
    log = tmp_path / "gunicorn.log"
    with running(args, cwd=tmp_path, env=env, log=log, url=f"{base}/__lbheartbeat__"):
        # A request whose headers are not finished holds one worker, so the
        # other serves the next ones: both workers count requests.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /v1/mushrooms HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.2)
            for _ in range(5):
                assert http_get(f"{base}/v1/mushrooms")[0] == 200
            held.sendall(b"Connection: close\r\n\r\n")
            assert held.recv(100).startswith(b"HTTP/1.1 200")
        # The worker answering exports its values first; the other one
        # exports within a second.
        labels = (("method", "GET"), ("route", "/v1/mushrooms"), ("status", "200"))
        deadline = time.monotonic() + 10
        while True:
            status, text = http_get(f"{base}/__metrics__")
            assert status == 200
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            count = samples.get(("kiln_request_duration_seconds_count", labels))
            if count == 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert count == 6
    everything = tuple(sorted((*labels, ("le", "+Inf"))))
    assert samples[("kiln_request_duration_seconds_bucket", everything)] == 6
    assert 0 < samples[("kiln_request_duration_seconds_sum", labels)] < 60
    actions = (("action", "list"), ("resource", "mushroom"), ("status", "200"))
    assert samples[("kiln_resource_actions_total", actions)] == 6
    # Each worker wrote its own values.
    assert len({path.stem.rpartition("_")[2] for path in shared.glob("counter_*.db")}) == 2


def test_a_request_answered_by_an_earlier_hook_is_timed(build, sink):
    app = build({"statsd_url": sink.url, "prometheus": True})
    app.before_request_funcs[None].insert(0, lambda: ("early", 202))
    assert app.test_client().get("/v1/nowhere").status_code == 202
    assert timers(sink.lines()) == {"kiln.request_duration.GET.unmatched.202": 1}


def test_both_recorders_get_every_kind_of_value(build, sink):
    metrics = kiln.application.state_of(build({"statsd_url": sink.url, "prometheus": True})).metrics
    gauge = CATALOGUE[0]._replace(name="queue", kind="gauge", labels=())
    metrics.recorder.gauge(gauge, (), 1)
    metrics.recorder.unique(CATALOGUE[0]._replace(name="users"), "u1")
    metrics.recorder.unique(CATALOGUE[0]._replace(name="users"), "u1")
    metrics.recorder.flush()
    assert sink.lines() == ["kiln.queue:1|g", "kiln.users:u1|s"]  # a value of a set once


def test_postgresql_pool_waits_and_where_safe_requests_read(postgresql_url, sink, monkeypatch):
    monkeypatch.setattr(kiln.metrics, "POOL_WAIT_FLOOR", 0)  # every checkout is a wait
    alice = {"Authorization": "Basic YWxpY2U6cHc="}
    bob = {"Authorization": "Basic Ym9iOnB3"}
    with fresh_schema(postgresql_url) as url:
        # The primary listed as its own replica: always fresh.
        app = kiln.create_app(
            {
                "views": VIEWS,
                "storage": {
                    "backend": "postgresql",
                    "url": url,
                    "read_urls": [url],
                    "replica_check_seconds": 0.05,
                },
                "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
                "metrics": {"statsd_url": sink.url},
            },
            configure_logging=False,
        )
        try:
            client = app.test_client()
            replicas = kiln.application.state_of(app).storage.database.replicas
            deadline = time.monotonic() + 10
            while replicas.pick() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            sink.lines()
            assert client.get("/v1/mushrooms", headers=bob).status_code == 200
            assert client.post("/v1/mushrooms", json={"data": {"name": "a"}}, headers=alice)
            assert client.get("/v1/mushrooms", headers=alice).status_code == 200  # just wrote
            lines = sink.lines()

            # The replica fails in the middle of a request: read again on the primary.
            def gone():
                raise psycopg.OperationalError("the replica is gone")

            monkeypatch.setattr(replicas.replicas[0].database, "pool", gone)
            assert client.get("/v1/mushrooms", headers=bob).status_code == 200
            fallback = sink.lines()
        finally:
            kiln.application.close_app(app)
    totals = counters(lines)
    assert totals["kiln.replica_reads.replica"] == 1
    assert totals["kiln.replica_reads.primary"] == 1
    assert timers(lines)[f"kiln.pool_wait.{_segment(describe(url))}"] >= 3
    assert counters(fallback)["kiln.replica_reads.fallback"] == 1


def test_only_checkouts_that_waited_are_pool_waits(sink):
    metrics = Metrics(Tally([StatsDExporter(sink.url)]))
    metrics.pool_wait("db", POOL_WAIT_FLOOR / 2)  # a connection was idle
    metrics.pool_wait("db", POOL_WAIT_FLOOR)
    metrics.recorder.close()
    [line] = sink.lines()
    assert line.startswith("kiln.pool_wait.db:1.000|ms")


def test_a_request_sends_its_metrics_in_one_datagram(build, sink):
    client = build({"statsd_url": sink.url}).test_client()
    client.post("/v1/mushrooms", json={"data": {"name": "a"}})
    [datagram] = sink.datagrams()
    assert len(datagram.splitlines()) >= 5  # duration, action, auth, backends


def test_an_export_sends_counters_added_up_and_every_duration_in_full_datagrams(sink):
    tally = Tally([StatsDExporter(sink.url)], interval=60)
    requests = CATALOGUE[0]._replace(name="requests", kind="counter")
    labels = ("GET", "/v1/mushrooms", "200")
    for _ in range(100):
        tally.count(requests, labels)
    tally.count(requests, labels, 0.25)
    for ms in range(100):
        tally.time(REQUEST_DURATION, labels, ms / 1000)
    tally.flush()  # the end of a request starts the thread; the export waits for it
    assert sink.datagrams() == []
    tally.export()
    datagrams = sink.datagrams()
    assert len(datagrams) > 1
    assert all(len(data) <= MAX_DATAGRAM for data in datagrams)
    lines = [line for data in datagrams for line in data.decode().splitlines()]
    assert lines[0] == "kiln.requests.GET.v1_mushrooms.200:100.25|c"
    name = "kiln.request_duration.GET.v1_mushrooms.200"
    assert lines[1:] == [f"{name}:{ms}.000|ms" for ms in range(100)]
    tally.export()  # nothing new, nothing sent
    assert sink.datagrams() == []
    tally.close()


class Outer:
    def outer(self):
        return self.inner()

    def inner(self):
        return 1


def test_a_backend_call_a_backend_makes_on_itself_is_part_of_the_outer_one(sink):
    metrics = Metrics(Tally([StatsDExporter(sink.url)]))
    backend = Outer()
    instrument_backend(backend, "cache", Outer, metrics)
    assert backend.outer() == 1
    assert backend.inner() == 1
    metrics.recorder.close()
    assert timers(sink.lines()) == {
        "kiln.backend_duration.cache.outer": 1,
        "kiln.backend_duration.cache.inner": 1,
    }


def test_prometheus_in_a_gunicorn_worker_needs_a_shared_directory(monkeypatch, caplog):
    # What a gunicorn worker has loaded before it builds the app.
    worker = types.ModuleType("gunicorn.workers.base")
    monkeypatch.setitem(sys.modules, "gunicorn.workers.base", worker)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    PrometheusExporter()
    assert "without PROMETHEUS_MULTIPROC_DIR" in caplog.text


class Adds:
    """A counter or histogram child without ``prometheus_client``'s values."""

    def __init__(self):
        self.amounts = []

    def inc(self, amount):
        self.amounts.append(("inc", amount))

    def observe(self, amount):
        self.amounts.append(("observe", amount))


def test_prometheus_children_without_the_values_they_have_today_use_their_methods():
    counter = Adds()
    _counter_adder(counter)(2)
    histogram = Adds()
    _histogram_adder(histogram)([0.5, 0.25])
    assert counter.amounts == [("inc", 2)]
    assert histogram.amounts == [("observe", 0.5), ("observe", 0.25)]


def test_a_histogram_bucket_is_the_first_bound_at_or_above_the_amount(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    prometheus = PrometheusExporter([kiln.metrics.POOL_WAIT])
    tally = Tally([prometheus])
    for seconds in (0.005, 0.0051, 100):  # a bound, above it, above every bound
        tally.time(kiln.metrics.POOL_WAIT, ("db",), seconds)
    tally.export()
    body = prometheus.exposition()[0].decode()
    assert 'kiln_pool_wait_seconds_bucket{le="0.005",pool="db"} 1.0' in body
    assert 'kiln_pool_wait_seconds_bucket{le="0.01",pool="db"} 2.0' in body
    assert 'kiln_pool_wait_seconds_bucket{le="10.0",pool="db"} 2.0' in body
    assert 'kiln_pool_wait_seconds_bucket{le="+Inf",pool="db"} 3.0' in body
    assert 'kiln_pool_wait_seconds_sum{pool="db"} 100.0101' in body


def test_user_ids_are_hashed_once_per_export_and_alike_in_each(sink):
    metrics = Metrics(Tally([StatsDExporter(sink.url)], interval=60))

    def request(user):
        identity = types.SimpleNamespace(policy="basicauth", prefixed_id=user)
        metrics.request({"kiln.start": 0.0, "kiln.identity": identity}, "GET", None, 200)

    for user in ("u1", "u2", "u1"):
        request(user)
    metrics.recorder.export()
    first = sorted(line for line in sink.lines() if line.endswith("|s"))
    request("u1")
    metrics.recorder.close()
    [again] = [line for line in sink.lines() if line.endswith("|s")]
    assert len(first) == 2
    assert again in first
    assert not any("u1" in line or "u2" in line for line in [*first, again])


def wait_for_datagrams(sink, seconds=5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        datagrams = sink.datagrams()
        if datagrams:
            return datagrams
        time.sleep(0.01)
    return []


def test_a_thread_of_the_process_exports_every_interval(sink):
    tally = Tally([StatsDExporter(sink.url)], interval=0.2)
    hits = CATALOGUE[0]._replace(name="hits", kind="counter", labels=())
    threads = threading.active_count()
    for _ in range(2):  # two requests
        tally.count(hits, ())
        tally.flush()
    assert sink.datagrams() == []
    assert threading.active_count() == threads + 1  # one thread exports
    tally._start()  # started once only
    assert threading.active_count() == threads + 1
    # The thread sends them, added up, within the interval.
    assert wait_for_datagrams(sink) == [b"kiln.hits:2|c\n"]
    tally.count(hits, ())
    tally.close()  # exports what is left; the thread stops
    assert sink.datagrams() == [b"kiln.hits:1|c\n"]
    assert threading.active_count() == threads
    tally.count(hits, ())
    tally.flush()  # after close: at once
    assert sink.datagrams() == [b"kiln.hits:1|c\n"]
    tally.close()


FORKED = """\
import os, sys, threading, time
from kiln.metrics import CATALOGUE, Exporter, StatsDExporter, Tally


class Slow(Exporter):
    # Holds a lock of its own through each export, a while.
    def __init__(self):
        self.lock = threading.Lock()

    def export(self, window):
        with self.lock:
            time.sleep(0.3)


hits = CATALOGUE[0]._replace(name="hits", kind="counter", labels=())
tally = Tally([StatsDExporter(sys.argv[1]), Slow()], interval=0.1)
tally.count(hits._replace(name="parent"), ())
tally.unique(hits._replace(name="users", kind="set"), "parent")
exporting = threading.Thread(target=tally.export)
exporting.start()
time.sleep(0.1)  # the export is under way: the fork waits for its end
pid = os.fork()
if pid == 0:
    tally.count(hits._replace(name="child"), ())
    tally.flush()  # the child starts a thread of its own, which exports (Slow's lock is free)
    time.sleep(1)
    tally.count(hits._replace(name="at_exit"), ())
    sys.exit(0)  # exported when the process exits
exporting.join()
os.waitpid(pid, 0)
"""


def test_a_forked_process_exports_its_own_values_and_what_is_left_at_exit(tmp_path, sink):
    script = write(tmp_path / "forked.py", FORKED)
    subprocess.run([sys.executable, str(script), sink.url], check=True, timeout=60)
    # Each line once: the parent's value was not copied into its child.
    assert sorted(sink.lines()) == [
        "kiln.at_exit:1|c",
        "kiln.child:1|c",
        "kiln.parent:1|c",
        "kiln.users:parent|s",
    ]


class Broken(Exporter):
    def export(self, window):
        raise RuntimeError("exporter bug")


def test_an_exporter_that_fails_loses_its_window_only(sink, caplog):
    tally = Tally([Broken(), StatsDExporter(sink.url)])
    hits = CATALOGUE[0]._replace(name="hits", kind="counter", labels=())
    tally.count(hits, ())
    with caplog.at_level(logging.ERROR, "kiln.metrics"):
        tally.flush()
    assert sink.lines() == ["kiln.hits:1|c"]
    assert "The Broken lost a second of metrics" in caplog.text
    tally.close()


def test_an_expander_that_fails_loses_the_window(sink, caplog):
    tally = Tally([StatsDExporter(sink.url)])

    def broken(window):
        raise RuntimeError("expander bug")

    tally.expanders.append(broken)
    tally.count(CATALOGUE[0]._replace(name="hits", kind="counter", labels=()), ())
    with caplog.at_level(logging.ERROR, "kiln.metrics"):
        tally.flush()
    assert sink.lines() == []  # exporters never see a window half expanded
    assert "an expander failed" in caplog.text
    tally.expanders.remove(broken)
    tally.close()


class Listed(kiln.metrics.Recorder):
    """A recorder of its own: what each method was called with."""

    def __init__(self):
        self.calls = []

    def count(self, metric, values, n=1):
        self.calls.append(("count", metric.name, values, n))

    def time(self, metric, values, seconds):
        self.calls.append(("time", metric.name, values, seconds))

    def gauge(self, metric, values, value):
        self.calls.append(("gauge", metric.name, values, value))

    def unique(self, metric, value):
        self.calls.append(("unique", metric.name, (), value))


def test_a_handle_of_any_recorder_records_through_its_methods():
    recorder = Listed()
    for kind in ("counter", "timer", "gauge", "set"):
        metric = CATALOGUE[0]._replace(name=kind, kind=kind, labels=("l",))
        recorder.handle(metric, ("v",) if kind != "set" else ())(7)
    recorder.flush()
    recorder.export()
    recorder.close()
    assert recorder.calls == [
        ("count", "counter", ("v",), 7),
        ("time", "timer", ("v",), 7),
        ("gauge", "gauge", ("v",), 7),
        ("unique", "set", (), 7),
    ]


def test_a_tally_handle_appends_to_the_values_an_export_takes(sink):
    tally = Tally([StatsDExporter(sink.url)])
    gauge = CATALOGUE[0]._replace(name="depth", kind="gauge", labels=())
    users = CATALOGUE[0]._replace(name="users", kind="set", labels=())
    tally.handle(gauge)(3)
    tally.handle(users)("a")
    tally.handle(kiln.metrics.POOL_WAIT, ("db",))(0.5)
    tally.flush()
    assert sink.lines() == ["kiln.pool_wait.db:500.000|ms", "kiln.depth:3|g", "kiln.users:a|s"]
    tally.close()


def test_an_exporter_of_ones_own_gets_each_window(build, sink):
    # docs/observability.md, "Your own exporter".
    windows = []

    class Kept(Exporter):
        def export(self, window):
            windows.append(window)

    app = build({"statsd_url": sink.url})
    kiln.application.state_of(app).metrics.recorder.exporters.append(Kept())
    app.test_client().get("/v1/mushrooms")
    [window] = windows
    labels = ("GET", "/v1/mushrooms", "200")
    assert window.counts[(kiln.metrics.AUTHENTICATIONS, ("none", "anonymous"))] == 1
    assert len(window.times[(kiln.metrics.REQUEST_DURATION, labels)]) == 1
    assert sink.lines()  # the others still get it


def test_a_tally_that_is_gone_is_not_exported_at_exit():
    tally = Tally([])
    ref = weakref.ref(tally)
    del tally
    gc.collect()
    assert ref() is None
    _call(ref, "close")  # what the exit and fork hooks do: nothing
