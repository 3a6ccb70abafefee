from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import kiln
from kiln.config import Configuration
from kiln.exceptions import ConfigError
from kiln.metrics import instrument_backend
from kiln.tracing import _Carrier, _provider_from_environment, build_tracer
from tests.test_cli import clean_env
from tests.test_metrics import Outer

VIEWS = ["tests.resource.sample_resources"]
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    # The process's tracer provider can be set once: the first test module to
    # need one sets it, with an in-memory exporter.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        sdk = TracerProvider()
        sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(sdk)
    return trace.get_tracer_provider()


@pytest.fixture
def spans():
    EXPORTER.clear()
    return EXPORTER.get_finished_spans


@pytest.fixture(params=[False, True], ids=["fast path", "flask path"])
def app(request, tmp_path):
    app = kiln.create_app(
        {
            "views": VIEWS,
            "storage": {"backend": "sqlite", "url": str(tmp_path / "t.sqlite")},
            "tracing": {"enabled": True},
        },
        configure_logging=False,
    )
    if request.param:
        app.before_request(lambda: None)  # resource requests go through Flask
    yield app
    kiln.application.close_app(app)


def by_name(finished):
    return {span.name: span for span in finished}


def test_a_request_its_unit_of_work_and_its_backend_calls_are_spans(app, spans):
    response = app.test_client().post("/v1/mushrooms", json={"data": {"name": "a"}})
    assert response.status_code == 201
    found = by_name(spans())
    request = found["POST /v1/mushrooms"]
    assert request.kind == SpanKind.SERVER
    assert dict(request.attributes) == {
        "http.request.method": "POST",
        "http.route": "/v1/mushrooms",
        "http.response.status_code": 201,
        "kiln.request_id": response.headers["X-Request-Id"],
    }
    assert request.parent is None
    unit = found["unit of work"]
    assert unit.parent.span_id == request.context.span_id
    apply = found["storage.apply"]
    assert apply.parent.span_id == unit.context.span_id
    assert apply.context.trace_id == request.context.trace_id
    assert {span.context.trace_id for span in spans()} == {request.context.trace_id}


def test_the_clients_trace_is_continued(app, spans):
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent = "b7ad6b7169203331"
    app.test_client().get("/v1/mushrooms", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    request = by_name(spans())["GET /v1/mushrooms"]
    assert format(request.context.trace_id, "032x") == trace_id
    assert format(request.parent.span_id, "016x") == parent


def test_a_backend_failure_marks_its_spans_as_errors(app, spans, tmp_path):
    client = app.test_client()
    with contextlib.closing(sqlite3.connect(tmp_path / "t.sqlite")) as db:
        db.execute("DROP TABLE records")
    assert client.get("/v1/mushrooms").status_code == 503
    found = by_name(spans())
    assert found["GET /v1/mushrooms"].status.status_code == StatusCode.ERROR
    assert found["storage.list_page"].status.status_code == StatusCode.ERROR
    assert found["GET /v1/mushrooms"].attributes["http.response.status_code"] == 503


def test_a_request_no_route_matched_is_named_by_its_method(app, spans):
    assert app.test_client().get("/v1/nowhere").status_code == 404
    [request] = spans()
    assert request.name == "GET"
    assert "http.route" not in request.attributes
    assert request.status.status_code == StatusCode.UNSET


def test_tracing_follows_the_otel_environment_unless_set(provider):
    auto = Configuration.from_mapping({})
    assert build_tracer(auto, {}) is None
    assert build_tracer(auto, {"PATH": "/bin"}) is None
    assert build_tracer(auto, {"OTEL_SERVICE_NAME": "svc"}) is not None
    off = Configuration.from_mapping({"tracing": {"enabled": False}})
    assert build_tracer(off, {"OTEL_SERVICE_NAME": "svc"}) is None
    app = kiln.create_app({}, configure_logging=False)
    assert kiln.application.state_of(app).tracer is None


def test_tracing_on_without_opentelemetry_is_refused(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "opentelemetry" else real(name)
    )
    on = Configuration.from_mapping({"tracing": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"pip install kiln-framework\[opentelemetry\]"):
        build_tracer(on)


def test_the_otel_variables_configure_the_exporters(tmp_path):
    script = textwrap.dedent(
        """
        import kiln
        from opentelemetry import trace

        app = kiln.create_app(
            {"views": ["tests.resource.sample_resources"], "storage": {"backend": "memory"}},
            configure_logging=False,
        )
        app.test_client().get("/v1/mushrooms")
        trace.get_tracer_provider().shutdown()
        """
    )
    env = clean_env(OTEL_SERVICE_NAME="mushrooms", OTEL_TRACES_EXPORTER="console,none,zipkin2")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "'zipkin2', which is not installed" in done.stderr
    spans = json.loads("[" + done.stdout.replace("}\n{", "},\n{") + "]")
    request = next(span for span in spans if span["name"] == "GET /v1/mushrooms")
    assert request["resource"]["attributes"]["service.name"] == "mushrooms"
    assert request["attributes"]["http.response.status_code"] == 200


def test_a_request_answered_by_an_earlier_hook_is_traced_with_its_id(spans):
    app = kiln.create_app({"tracing": {"enabled": True}}, configure_logging=False)
    app.before_request_funcs[None].insert(0, lambda: ("early", 202))
    response = app.test_client().get("/v1/")
    [request] = spans()
    assert request.attributes["kiln.request_id"] == response.headers["X-Request-Id"]
    assert request.attributes["http.response.status_code"] == 202


def test_the_environ_is_read_as_headers():
    carrier = _Carrier({"HTTP_TRACEPARENT": "00-x", "HTTP_X_B3_ID": "1", "PATH_INFO": "/"})
    assert sorted(carrier.keys()) == ["traceparent", "x-b3-id"]
    assert carrier.get("traceparent") == ["00-x"]
    assert carrier.get("tracestate") is None


def test_without_the_sdk_spans_are_dropped_with_a_warning(monkeypatch, caplog):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "opentelemetry.sdk" else real(name),
    )
    _provider_from_environment({})
    assert "opentelemetry-sdk is not installed" in caplog.text


def test_a_backend_call_a_backend_makes_on_itself_is_no_span_of_its_own(spans):
    backend = Outer()
    instrument_backend(backend, "cache", Outer, None, trace.get_tracer("test"))
    assert backend.outer() == 1
    assert [span.name for span in spans()] == ["cache.outer"]
