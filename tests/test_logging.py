from __future__ import annotations

import datetime
import logging
import socket
import ssl
import sys
import threading
import time

import orjson
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln.logging as kiln_logging
from kiln import create_app
from kiln.config import Configuration
from kiln.exceptions import ConfigError
from kiln.logging import (
    JSONFormatter,
    TCPHandler,
    TextFormatter,
    UDPHandler,
    configure,
    logstash_event,
    printable,
)

# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


def _logger_states():
    manager = logging.Logger.manager
    loggers = [logging.getLogger()] + [
        logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    return {
        logger: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for logger in loggers
    }


@pytest.fixture(autouse=True)
def restore_logging():
    before = _logger_states()
    yield
    for logger, (level, handlers, propagate, disabled) in _logger_states().items():
        old = before.get(logger, (logging.NOTSET, [], True, False))
        for handler in logger.handlers:
            if handler not in old[1]:
                handler.close()
        level, handlers, propagate, disabled = old
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled
    kiln_logging._debug_level_set = False


def kiln_handlers():
    return [h for h in logging.getLogger().handlers if getattr(h, "_kiln_default_handler", False)]


def record(message="hello", *args, level=logging.INFO, exc_info=None, name="tests.log", **extra):
    rv = logging.LogRecord(name, level, __file__, 42, message, args, exc_info, func="a_view")
    rv.__dict__.update(extra)
    return rv


def raised(exc):
    try:
        raise exc
    except Exception:
        return sys.exc_info()


@pytest.fixture
def udp_collector():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Collector:
    """A TCP (or TLS) log collector on loopback, recording lines and connections."""

    def __init__(self, port=0, ssl_context=None, close_after_first_line=False, stall_first=False):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if stall_first:
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(16)
        self.server.settimeout(0.02)
        self.port = self.server.getsockname()[1]
        self.ssl_context = ssl_context
        self.close_after_first_line = close_after_first_line
        self.stall_first = stall_first
        self.lines = []
        self.partial = []
        self.accepted = []
        self.first_closed = threading.Event()
        self.stopping = threading.Event()
        self.stalled = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted.append(time.monotonic())
            conn.settimeout(5)
            if self.stall_first and len(self.accepted) == 1:
                self.stalled.append(conn)
                continue
            try:
                if self.ssl_context is not None:
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                self.read(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def read(self, conn):
        with conn.makefile("rb") as lines:
            for line in lines:
                try:
                    self.lines.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    self.partial.append(line)  # what a dropped connection cut short
                    return
                if self.close_after_first_line and len(self.accepted) == 1:
                    self.first_closed.set()
                    return

    def messages(self):
        return [line["@message"] for line in self.lines]

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        for conn in self.stalled:
            conn.close()
        self.server.close()


@pytest.fixture
def collector():
    started = []

    def start(**kwargs):
        started.append(Collector(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tcp_handler():
    handlers = []

    def build(port, **kwargs):
        kwargs.setdefault("initial_backoff", 0.01)
        kwargs.setdefault("max_backoff", 0.05)
        kwargs.setdefault("timeout", 2.0)
        handlers.append(TCPHandler("127.0.0.1", port, **kwargs))
        return handlers[-1]

    yield build
    for handler in handlers:
        handler.close()
        assert not handler._thread.is_alive()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def server_context(ca, hostname):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(context)
    return context


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --------------------------------------------------------------------------
# configure
# --------------------------------------------------------------------------


def test_configure_defaults_to_warnings_on_stderr_and_the_summary_at_info(capsys):
    configure(Configuration.from_mapping({}))

    logging.getLogger("tests.defaults").info("not shown")
    logging.getLogger("tests.defaults").warning("shown %s", 1)

    err = capsys.readouterr().err
    assert "tests.defaults WARNING shown 1" in err
    assert "not shown" not in err
    assert len(kiln_handlers()) == 1
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("request.summary").level == logging.INFO


def test_configure_twice_replaces_its_handler_and_keeps_the_others():
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    logging.getLogger().setLevel(logging.ERROR)
    config = Configuration.from_mapping({})

    configure(config)
    first = kiln_handlers()
    configure(config)

    assert len(kiln_handlers()) == 1
    assert kiln_handlers() != first
    assert foreign in logging.getLogger().handlers
    assert logging.getLogger().level == logging.WARNING


def test_configure_keeps_a_lower_root_level_and_a_set_summary_level():
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger("request.summary").setLevel(logging.ERROR)

    configure(Configuration.from_mapping({}))

    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("request.summary").level == logging.ERROR


def test_configure_with_json_format_writes_mozlog_lines(capsys):
    configure(Configuration.from_mapping({"logging_format": "json", "project": {"name": "svc"}}))

    logging.getLogger("tests.json").warning("a %s", "b", extra={"fields": {"k": [1]}})

    line = capsys.readouterr().err.strip()
    event = orjson.loads(line)
    assert "\n" not in line
    assert event["Logger"] == "svc"
    assert event["Type"] == "tests.json"
    assert event["Severity"] == 4
    assert event["EnvVersion"] == "2.0"
    assert event["Pid"] > 0
    assert event["Hostname"]
    assert event["Fields"] == {"msg": "a b", "k": [1]}
    assert abs(event["Timestamp"] / 1e9 - time.time()) < 60


def test_configure_applies_a_dictconfig_that_keeps_existing_loggers(capsys):
    existing = logging.getLogger("tests.existing")
    configure(
        Configuration.from_mapping(
            {
                "logging": {
                    "formatters": {"bare": {"format": "%(name)s:%(message)s"}},
                    "handlers": {
                        "out": {
                            "class": "logging.StreamHandler",
                            "stream": "ext://sys.stdout",
                            "formatter": "bare",
                        }
                    },
                    "loggers": {"tests.dict": {"level": "INFO", "handlers": ["out"]}},
                }
            }
        )
    )

    logging.getLogger("tests.dict").info("through dictConfig")
    existing.error("still here")

    captured = capsys.readouterr()
    assert "tests.dict:through dictConfig" in captured.out
    assert not existing.disabled
    assert kiln_handlers() == []


def test_configure_lets_a_dictconfig_disable_existing_loggers_when_asked():
    existing = logging.getLogger("tests.silenced")

    configure(
        Configuration.from_mapping({"logging": {"version": 1, "disable_existing_loggers": True}})
    )

    assert existing.disabled


def test_configure_with_debug_logging_lowers_kiln_to_debug_until_turned_off():
    configure(Configuration.from_mapping({"debug": {"logging": True}}))
    assert logging.getLogger("kiln").level == logging.DEBUG
    assert logging.getLogger("kiln.app").isEnabledFor(logging.DEBUG)

    configure(Configuration.from_mapping({}))
    assert logging.getLogger("kiln").level == logging.NOTSET


def test_configure_keeps_a_kiln_level_set_by_dictconfig():
    configure(Configuration.from_mapping({"debug": {"logging": True}}))
    configure(Configuration.from_mapping({"logging": {"loggers": {"kiln": {"level": "ERROR"}}}}))
    assert logging.getLogger("kiln").level == logging.ERROR

    configure(Configuration.from_mapping({"logging": {"loggers": {"kiln": {"level": "ERROR"}}}}))
    assert logging.getLogger("kiln").level == logging.ERROR


def test_configure_with_a_broken_dictconfig_raises_and_keeps_the_default_handler():
    config = Configuration.from_mapping({"logging": {"handlers": {"h": {"class": "no.Such"}}}})

    with pytest.raises(ConfigError, match="'logging' setting is not a valid dictConfig"):
        configure(config)

    assert len(kiln_handlers()) == 1


def test_create_app_configures_logging_again_after_a_reload(tmp_path, capsys):
    path = tmp_path / "kiln.yaml"
    path.write_text("logging_format: text\n")
    config = Configuration([str(path)], environ={})
    create_app(config)
    path.write_text("logging_format: json\n")

    assert config.load()
    logging.getLogger("tests.reload").warning("after reload")

    assert len(kiln_handlers()) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert orjson.loads(line)["Fields"]["msg"] == "after reload"


# --------------------------------------------------------------------------
# Formatters
# --------------------------------------------------------------------------


def test_text_formatter_appends_fields_and_quotes_those_that_could_split_the_line():
    line = TextFormatter().format(
        record(fields={"a": "plain", "b": "two words", "c": "x\r\ny", "d": None, "e": ""})
    )

    assert line.endswith('hello a=plain b="two words" c="x\\r\\ny" d=null e=""')
    assert "\n" not in line


def test_printable_escapes_control_and_separator_characters():
    assert printable("/ok") == "/ok"
    assert printable("/\r\nFAKE\u2028") == "/\\r\\nFAKE\\u2028"


def test_json_formatter_adds_the_error_and_traceback_of_the_record():
    event = orjson.loads(JSONFormatter().format(record(exc_info=raised(KeyError("k")))))

    assert event["Logger"] == "kiln"
    assert event["Fields"]["error"] == "KeyError('k')"
    assert "Traceback" in event["Fields"]["traceback"]
    assert "raise exc" in event["Fields"]["traceback"]


@pytest.mark.parametrize(
    ("level", "severity"),
    [(50, 2), (40, 3), (30, 4), (25, 6), (20, 6), (10, 7), (5, 7)],
)
def test_json_formatter_maps_levels_to_syslog_severities(level, severity):
    assert orjson.loads(JSONFormatter().format(record(level=level)))["Severity"] == severity


def test_json_formatter_ignores_an_empty_exc_info_and_uses_hostname_env(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "web-1")
    event = orjson.loads(JSONFormatter().format(record(exc_info=(None, None, None))))

    assert event["Hostname"] == "web-1"
    assert "error" not in event["Fields"]


def test_json_formatter_writes_valid_json_for_lone_surrogates_and_odd_objects():
    line = JSONFormatter().format(record("bad \udc80 byte", fields={"obj": object()}))

    event = orjson.loads(line)
    assert event["Fields"]["msg"] == "bad \\udc80 byte"
    assert event["Fields"]["obj"].startswith("<object object")


def test_logstash_event_has_clays_fields_with_a_utc_timestamp():
    event = logstash_event(record("hi %s", "there", fields={"x": 1}), "web-1.example.org")

    assert event["@source_host"] == "web-1"
    assert event["@timestamp"].endswith("Z")
    assert event["@tags"] == ["tests.log"]
    assert event["@message"] == "hi there"
    assert event["@fields"] == {
        "level": "INFO",
        "filename": __file__,
        "lineno": 42,
        "method": "a_view",
        "x": 1,
    }
    assert logstash_event(record())["@source_host"] == socket.gethostname().split(".")[0]


# --------------------------------------------------------------------------
# request.summary
# --------------------------------------------------------------------------


def summaries(caplog):
    return [r for r in caplog.records if r.name == "request.summary"]


def test_request_summary_logs_cliquets_fields_for_a_404(caplog):
    caplog.set_level(logging.INFO, logger="request.summary")
    client = create_app(Configuration.from_mapping({})).test_client()

    response = client.get(
        "/v1/nowhere?a=1&b=x",
        headers={"User-Agent": "tests/1.0", "Accept-Language": "fr"},
    )

    assert response.status_code == 404
    [line] = summaries(caplog)
    fields = line.fields
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith('"GET /v1/nowhere?a=1&b=x" 404 (')
    assert fields["errno"] == 111
    assert fields["code"] == 404
    assert fields["uid"] is None
    assert fields["authn_type"] is None
    assert fields["querystring"] == {"a": "1", "b": "x"}
    assert fields["agent"] == "tests/1.0"
    assert fields["lang"] == "fr"
    assert fields["method"] == "GET"
    assert fields["path"] == "/v1/nowhere"
    assert isinstance(fields["t"], float)
    assert fields["t"] >= 0
    started = datetime.datetime.fromisoformat(fields["time"])
    assert abs((datetime.datetime.now(datetime.UTC) - started).total_seconds()) < 60


def test_request_summary_has_no_errno_on_success_and_carries_view_fields(caplog):
    caplog.set_level(logging.INFO, logger="request.summary")
    app = create_app(Configuration.from_mapping({}))

    @app.get("/v1/extra")
    def extra():
        from flask import request

        request.environ["kiln.summary_fields"] = {"nb_records": 3}
        return "ok"

    assert app.test_client().get("/v1/extra").status_code == 200
    [line] = summaries(caplog)
    assert line.fields["errno"] is None
    assert line.fields["code"] == 200
    assert line.fields["querystring"] == {}
    assert line.fields["nb_records"] == 3


def test_request_summary_renders_as_one_mozlog_json_line(capsys):
    app = create_app(Configuration.from_mapping({"logging_format": "json"}))

    app.test_client().get("/v1/nowhere?q=1")

    lines = capsys.readouterr().err.strip().splitlines()
    [event] = [orjson.loads(line) for line in lines if '"request.summary"' in line]
    assert event["Type"] == "request.summary"
    assert event["Severity"] == 6
    assert event["Fields"]["errno"] == 111
    assert event["Fields"]["code"] == 404
    assert event["Fields"]["uid"] is None
    assert event["Fields"]["querystring"] == {"q": "1"}
    assert isinstance(event["Fields"]["t"], float)


def test_request_summary_can_be_turned_off(caplog):
    caplog.set_level(logging.INFO, logger="request.summary")
    app = create_app(Configuration.from_mapping({"request": {"summary": False}}))

    app.test_client().get("/v1/nowhere")

    assert summaries(caplog) == []


def test_request_summary_keeps_a_crlf_injection_on_one_line(caplog):
    caplog.set_level(logging.INFO, logger="request.summary")
    client = create_app(Configuration.from_mapping({})).test_client()

    client.get("/%0d%0aFAKE 200 (1 ms)?x=%0d%0a")

    [line] = summaries(caplog)
    assert line.fields["path"] == "/\r\nFAKE 200 (1 ms)"
    for text in (
        line.getMessage(),
        TextFormatter().format(line),
        JSONFormatter().format(line),
    ):
        assert "\n" not in text
        assert "\r" not in text
    assert line.getMessage().startswith('"GET /\\r\\nFAKE 200 (1 ms)?x=%0d%0a" 400')


def test_request_summary_times_a_request_answered_by_an_earlier_hook(caplog):
    caplog.set_level(logging.INFO, logger="request.summary")
    app = create_app(Configuration.from_mapping({}))
    app.before_request_funcs[None].insert(0, lambda: ("early", 202))

    assert app.test_client().get("/v1/nowhere").status_code == 202
    [line] = summaries(caplog)
    assert line.fields["code"] == 202
    assert line.fields["t"] >= 0
    assert line.fields["time"]


# --------------------------------------------------------------------------
# UDPHandler
# --------------------------------------------------------------------------


def fail_in_a_view():
    return 1 / 0


def test_udp_handler_sends_a_logstash_datagram_with_the_records_own_traceback(udp_collector):
    handler = UDPHandler(*udp_collector.getsockname())
    logger = logging.getLogger("tests.udp")
    logger.addHandler(handler)
    logger.propagate = False

    try:
        fail_in_a_view()
    except ZeroDivisionError:
        logger.exception("boom %s", "here", extra={"fields": {"user": "alice"}})
    handler.close()

    data, _ = udp_collector.recvfrom(65536)
    event = orjson.loads(data)
    assert data.endswith(b"\n")
    assert event["@source_host"] == socket.gethostname().split(".")[0]
    stamp = datetime.datetime.fromisoformat(event["@timestamp"])
    assert event["@timestamp"].endswith("Z")
    assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 60
    assert event["@tags"] == ["tests.udp"]
    assert event["@message"] == "boom here"
    fields = event["@fields"]
    assert fields["level"] == "ERROR"
    assert fields["filename"] == __file__
    assert (
        fields["method"]
        == "test_udp_handler_sends_a_logstash_datagram_with_the_records_own_traceback"
    )
    assert isinstance(fields["lineno"], int)
    assert fields["user"] == "alice"
    assert fields["exception"] == "ZeroDivisionError('division by zero')"
    assert fields["traceback"].startswith("Traceback (most recent call last):")
    assert "in fail_in_a_view" in fields["traceback"]
    assert fields["traceback"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert "truncated" not in fields
    assert handler.dropped == 0


def test_udp_handler_truncates_a_huge_message_and_traceback_to_max_bytes(udp_collector):
    handler = UDPHandler(*udp_collector.getsockname(), max_bytes=2048)

    handler.emit(record("é€😀" * 50_000, exc_info=raised(ValueError("x" * 100_000))))

    data, _ = udp_collector.recvfrom(65536)
    event = orjson.loads(data)
    assert len(data) <= 2048
    assert event["@fields"]["truncated"] is True
    assert event["@message"].endswith("...")
    assert event["@message"].startswith("é€😀")
    assert event["@fields"]["traceback"].startswith("Traceback")
    assert event["@fields"]["level"] == "INFO"
    handler.close()


def test_udp_handler_keeps_the_fixed_fields_when_what_is_too_big_cannot_be_cut():
    handler = UDPHandler("127.0.0.1", 9, max_bytes=600)

    data = handler.encode(
        record("m" * 1000, name="n" * 1000, fields={"blob": ["x" * 5000], "level": "L" * 500})
    )

    event = orjson.loads(data)
    assert len(data) <= 600
    assert set(event) == {"@source_host", "@timestamp", "@tags", "@message", "@fields"}
    assert event["@fields"]["truncated"] is True
    assert event["@message"].startswith("mmm")
    assert event["@message"].endswith("...")
    assert len(event["@tags"][0]) == 64


def test_udp_datagrams_stay_within_max_bytes_however_little_room_is_left():
    handler = UDPHandler("127.0.0.1", 9, max_bytes=512)

    for pad in range(300, 520):
        data = handler.encode(
            record("m" * 900, fields={"pad": ["p" * pad], "a": "a" * 900, "b": "b" * 900})
        )
        assert len(data) <= 512
        assert orjson.loads(data)["@fields"]["truncated"] is True


def test_udp_handler_escapes_lone_surrogates_in_a_truncated_datagram():
    data = UDPHandler("127.0.0.1", 9, max_bytes=512).encode(record("\udc80" * 2000))

    assert len(data) <= 512
    assert orjson.loads(data)["@message"].startswith("\\udc80")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(min_size=1),
    repeat=st.integers(min_value=1, max_value=3000),
    max_bytes=st.integers(min_value=512, max_value=9000),
    name=st.text(max_size=300),
)
def test_udp_datagrams_are_valid_json_within_max_bytes_for_any_text(text, repeat, max_bytes, name):
    handler = UDPHandler("127.0.0.1", 9, max_bytes=max_bytes)

    data = handler.encode(record(text * repeat, name=name or "x", fields={"f": text * 3}))

    assert len(data) <= max_bytes
    assert data.endswith(b"\n")
    event = orjson.loads(data)
    message, original = event["@message"], text * repeat
    if message != original:
        assert event["@fields"]["truncated"] is True
        assert message.endswith("...")
        assert original.startswith(message[:-3])


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("no-such-host.invalid", 5140),  # does not resolve
        ("255.255.255.255", 5140),  # broadcast without SO_BROADCAST: EACCES
    ],
)
def test_udp_handler_drops_and_counts_what_it_cannot_send(host, port):
    handler = UDPHandler(host, port)
    logger = logging.getLogger("tests.udp.unreachable")
    logger.addHandler(handler)
    logger.propagate = False

    logger.error("lost")
    logger.error("lost too")

    assert handler.dropped == 2
    assert handler._socket is None
    handler.close()


def test_udp_handler_drops_a_record_that_cannot_be_formatted(udp_collector):
    handler = UDPHandler(*udp_collector.getsockname())

    handler.emit(record("%d", "not a number"))
    handler.emit(record("fine"))
    handler.emit(record("fine again"))

    received = [orjson.loads(udp_collector.recvfrom(65536)[0]) for _ in range(2)]
    assert [event["@message"] for event in received] == ["fine", "fine again"]
    assert handler.dropped == 1
    handler.close()


def test_udp_handler_refuses_a_max_bytes_too_small_for_its_fixed_fields():
    with pytest.raises(ValueError, match="at least 512"):
        UDPHandler("127.0.0.1", 9, max_bytes=100)


@pytest.mark.parametrize("path", ["kiln.logging.UDPHandler", "clay.logger.UDPHandler"])
def test_udp_handler_is_configured_through_dictconfig(udp_collector, path):
    host, port = udp_collector.getsockname()
    configure(
        Configuration.from_mapping(
            {
                "logging": {
                    "handlers": {"udp": {"class": path, "host": host, "port": port}},
                    "loggers": {"tests.udp.dict": {"level": "INFO", "handlers": ["udp"]}},
                }
            }
        )
    )

    logging.getLogger("tests.udp.dict").info("via %s", path)

    data, _ = udp_collector.recvfrom(65536)
    assert orjson.loads(data)["@message"] == f"via {path}"


# --------------------------------------------------------------------------
# TCPHandler
# --------------------------------------------------------------------------


def test_tcp_handler_delivers_lines_in_order_with_the_records_own_traceback(collector, tcp_handler):
    server = collector()
    handler = tcp_handler(server.port)
    logger = logging.getLogger("tests.tcp")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False

    for number in range(100):
        logger.info("line %d", number)
    try:
        fail_in_a_view()
    except ZeroDivisionError:
        logger.exception("failed")

    assert handler.drain(5)
    assert wait_for(lambda: len(server.lines) == 101)
    assert server.messages() == [f"line {n}" for n in range(100)] + ["failed"]
    traceback = server.lines[-1]["@fields"]["traceback"]
    assert "in fail_in_a_view" in traceback
    assert traceback != "None\n"
    assert server.lines[0]["@timestamp"].endswith("Z")
    assert handler.sent == 101
    assert handler.dropped == 0
    assert len(server.accepted) == 1


def test_tcp_handler_keeps_records_while_the_collector_is_down_then_delivers_them_in_order(
    collector, tcp_handler
):
    port = free_port()
    handler = tcp_handler(port)

    for number in range(20):
        handler.emit(record(f"queued {number}"))
    time.sleep(0.2)
    assert handler.sent == 0
    assert handler.dropped == 0

    server = collector(port=port)
    assert handler.drain(5)
    assert wait_for(lambda: len(server.lines) == 20)
    assert server.messages() == [f"queued {n}" for n in range(20)]
    assert handler.dropped == 0


def test_tcp_handler_drops_and_counts_without_blocking_when_the_queue_is_full(tcp_handler):
    handler = tcp_handler(free_port(), queue_size=5, initial_backoff=1.0, max_backoff=1.0)

    started = time.monotonic()
    for number in range(50):
        handler.emit(record(f"r{number}"))
    elapsed = time.monotonic() - started

    assert elapsed < 0.5
    assert handler.dropped in (44, 45)  # 5 queued, maybe 1 in the sender's hands
    assert not handler.drain(0.05)

    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started < 1.0
    assert not handler._thread.is_alive()
    assert handler.dropped == 50
    assert handler.sent == 0


def test_tcp_handler_backoff_is_exponential_and_capped(collector, tcp_handler, ca, tmp_path):
    # A TLS collector whose certificate names another host: every attempt
    # reaches it (so we see when) and fails verification.
    server = collector(ssl_context=server_context(ca, "example.org"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = tcp_handler(
        server.port, ssl_ca_file=str(ca_file), initial_backoff=0.01, max_backoff=0.06
    )

    handler.emit(record("never delivered"))
    assert wait_for(lambda: len(server.accepted) >= 10, timeout=5)

    gaps = [b - a for a, b in zip(server.accepted, server.accepted[1:], strict=False)]
    assert max(gaps) < 0.3  # uncapped, the 9th wait alone would be 2.56 s
    assert max(gaps[4:]) >= 0.04  # it did back off up to (about) the cap
    assert server.lines == []
    assert handler.sent == 0


def test_tcp_handler_delivers_over_tls_with_a_verified_certificate(
    collector, tcp_handler, ca, tmp_path
):
    server = collector(ssl_context=server_context(ca, "127.0.0.1"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = tcp_handler(server.port, ssl_ca_file=str(ca_file))

    handler.emit(record("secret"))
    handler.emit(record("secret too"))

    assert handler.drain(5)
    assert wait_for(lambda: len(server.lines) == 2)
    assert server.messages() == ["secret", "secret too"]


def test_tcp_handler_never_delivers_to_a_certificate_for_another_host(
    collector, tcp_handler, ca, tmp_path
):
    server = collector(ssl_context=server_context(ca, "example.org"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = tcp_handler(server.port, ssl_ca_file=str(ca_file))

    handler.emit(record("secret"))

    assert wait_for(lambda: len(server.accepted) >= 3)
    assert not handler.drain(0.05)
    handler.close()
    assert server.lines == []
    assert handler.sent == 0
    assert handler.dropped == 1


def test_tcp_handler_with_tls_uses_the_system_store():
    handler = TCPHandler("127.0.0.1", 9, tls=True)
    try:
        assert handler._context is not None
        assert handler._context.check_hostname
        assert handler._context.verify_mode == ssl.CERT_REQUIRED
    finally:
        handler.close()


def test_tcp_handler_reconnects_when_the_collector_closed_the_connection(collector, tcp_handler):
    server = collector(close_after_first_line=True)
    handler = tcp_handler(server.port)

    handler.emit(record("first"))
    assert server.first_closed.wait(5)
    time.sleep(0.05)
    handler.emit(record("second"))

    assert handler.drain(5)
    assert wait_for(lambda: len(server.lines) == 2)
    assert server.messages() == ["first", "second"]
    assert len(server.accepted) == 2


def test_tcp_handler_resends_a_record_after_a_send_timeout(collector, tcp_handler):
    server = collector(stall_first=True)
    handler = tcp_handler(server.port, timeout=0.5)

    handler.emit(record("x" * 8_000_000))  # more than the stalled connection's buffers
    handler.emit(record("after"))

    assert handler.drain(5)
    assert wait_for(lambda: len(server.lines) == 2)
    assert server.messages() == ["x" * 8_000_000, "after"]
    assert len(server.accepted) == 2


def test_tcp_handler_drops_records_it_cannot_format_or_that_come_after_close(
    collector, tcp_handler
):
    server = collector()
    handler = tcp_handler(server.port)

    handler.emit(record("%d", "not a number"))
    handler.emit(record("kept"))
    assert handler.drain(5)
    handler.close()
    handler.emit(record("too late"))
    handler.flush()
    handler.close()

    assert wait_for(lambda: len(server.lines) == 1)
    assert server.messages() == ["kept"]
    assert handler.dropped == 2
    assert not handler._thread.is_alive()


def test_tcp_handler_flush_waits_for_the_queue():
    handler = TCPHandler("127.0.0.1", free_port(), timeout=0.1, initial_backoff=1.0)
    handler.emit(record("stuck"))

    started = time.monotonic()
    handler.flush()
    assert 0.05 < time.monotonic() - started < 1.0

    handler.close()
    assert not handler._thread.is_alive()
    assert handler.dropped == 1


def test_tcp_handler_close_stops_an_idle_sender():
    handler = TCPHandler("127.0.0.1", 9)

    handler.close()

    assert not handler._thread.is_alive()
    assert handler.drain(0.01)


def test_json_formatter_is_configured_through_dictconfig_as_documented(capsys):
    configure(
        Configuration.from_mapping(
            {
                "logging": {
                    "formatters": {
                        "mozlog": {"()": "kiln.logging.JSONFormatter", "logger_name": "svc"}
                    },
                    "handlers": {
                        "out": {
                            "class": "logging.StreamHandler",
                            "stream": "ext://sys.stdout",
                            "formatter": "mozlog",
                        }
                    },
                    "loggers": {"tests.mozlog": {"level": "INFO", "handlers": ["out"]}},
                }
            }
        )
    )

    logging.getLogger("tests.mozlog").info("documented")

    event = orjson.loads(capsys.readouterr().out)
    assert event["Logger"] == "svc"
    assert event["Fields"]["msg"] == "documented"
