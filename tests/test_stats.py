from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kiln.config
from kiln import stats

# --------------------------------------------------------------------------
# Real statsd listeners on loopback ephemeral ports
# --------------------------------------------------------------------------


_OPEN: list = []  # listeners closed after each test


class UDPListener:
    def __init__(self):
        _OPEN.append(self)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.port = self.sock.getsockname()[1]

    def packet(self) -> str:
        return self.sock.recv(65536).decode()

    def close(self):
        self.sock.close()

    def nothing(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(65536)
        except TimeoutError:
            return True
        return False


class TCPListener:
    def __init__(self, sock=None):
        _OPEN.append(self)
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sock is None:
            self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(2)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self._conns = []

    def read_lines(self, n: int) -> list[str]:
        if not self._conns:
            conn, _ = self.sock.accept()
            conn.settimeout(2)
            self._conns.append(conn)
        while self.data.count(b"\n") < n:
            chunk = self._conns[0].recv(65536)
            if not chunk:
                break
            self.data += chunk
        lines = self.data.decode().split("\n")
        self.data = "\n".join(lines[n:]).encode()
        return lines[:n]

    def close(self):
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture(autouse=True)
def _fresh_connection():
    stats.connection.reset()
    yield
    stats.connection.reset()
    while _OPEN:
        _OPEN.pop().close()


def use_statsd(monkeypatch, **statsd):
    monkeypatch.setattr(kiln.config.CONFIG, "config", {"statsd": statsd})


@pytest.fixture
def udp(monkeypatch):
    listener = UDPListener()
    use_statsd(monkeypatch, protocol="udp", host="127.0.0.1", port=listener.port)
    return listener


@pytest.fixture
def tcp(monkeypatch):
    listener = TCPListener()
    use_statsd(monkeypatch, protocol="tcp", host="127.0.0.1", port=listener.port)
    return listener


# Socket activity of the current thread, seen through audit hooks (PEP 578):
# proof that disabled stats do no I/O, without replacing the socket module.
_AUDIT: list[list[str]] = []


def _audit(event, _args):
    if _AUDIT and event.startswith("socket.") and threading.current_thread() is _AUDIT_THREAD[0]:
        _AUDIT[-1].append(event)


_AUDIT_THREAD: list[threading.Thread] = []
sys.addaudithook(_audit)


@pytest.fixture
def socket_events():
    events: list[str] = []
    _AUDIT_THREAD[:] = [threading.current_thread()]
    _AUDIT.append(events)
    yield events
    _AUDIT.remove(events)


# --------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------

CASES = [
    (lambda: stats.count("foo"), "foo:1|c\n"),
    (lambda: stats.count("foo", 2.9), "foo:2.9|c\n"),
    (lambda: stats.count("foo", -3), "foo:-3|c\n"),
    (lambda: stats.count("foo", 1, sample_rate=1), "foo:1|c\n"),
    (lambda: stats.timing("foo", 10.5), "foo:10.5|ms\n"),
    (lambda: stats.timing("foo", 0.0000001), "foo:0.0000001|ms\n"),
    (lambda: stats.timing("foo", 1e20), "foo:100000000000000000000|ms\n"),
    (lambda: stats.timing("foo", 2.0), "foo:2|ms\n"),
    (lambda: stats.gauge("foo", 1), "foo:1|g\n"),
    (lambda: stats.gauge("foo", 1.25), "foo:1.25|g\n"),
    (lambda: stats.gauge("foo", -0.0), "foo:0|g\n"),
    (lambda: stats.gauge("foo", -5), "foo:0|g\nfoo:-5|g\n"),
    (lambda: stats.gauge_delta("foo", 3), "foo:+3|g\n"),
    (lambda: stats.gauge_delta("foo", -2.5), "foo:-2.5|g\n"),
    (lambda: stats.gauge_delta("foo", 0), "foo:+0|g\n"),
    (lambda: stats.unique_set("foo", "bar"), "foo:bar|s\n"),
    (lambda: stats.unique_set("foo", 42), "foo:42|s\n"),
    (lambda: stats.send("raw:1|c"), "raw:1|c\n"),
    (lambda: stats.send("raw:1|c\n"), "raw:1|c\n"),
]


@pytest.mark.parametrize(("emit", "wire"), CASES)
def test_udp_listener_receives_the_exact_line(udp, emit, wire):
    assert emit() is True
    assert udp.packet() == wire


@pytest.mark.parametrize(("emit", "wire"), CASES)
def test_tcp_listener_receives_the_exact_line(tcp, emit, wire):
    assert emit() is True
    expected = wire.rstrip("\n").split("\n")
    assert tcp.read_lines(len(expected)) == expected


def test_prefix_is_prepended_with_a_dot(monkeypatch):
    listener = UDPListener()
    for prefix in ("svc", "svc."):
        use_statsd(monkeypatch, host="127.0.0.1", port=listener.port, prefix=prefix)
        stats.count("hits")
        assert listener.packet() == "svc.hits:1|c\n"


def test_sampled_counts_carry_the_rate_and_only_a_fraction_is_sent(tcp):
    sent = sum(stats.count("foo", sample_rate=0.5) for _ in range(2000))
    assert 800 < sent < 1200
    assert set(tcp.read_lines(sent)) == {"foo:1|c|@0.5"}


@pytest.mark.parametrize("rate", [0, -0.5, 1.5])
def test_sample_rate_outside_0_1_raises(udp, rate):
    with pytest.raises(ValueError, match="sample_rate"):
        stats.count("foo", sample_rate=rate)


@pytest.mark.parametrize("key", ["", "a:b", "a|b", "a@b", "a\nb", "a\rb", "a\0b"])
def test_malformed_keys_raise(udp, key):
    with pytest.raises(ValueError, match="Invalid stats key"):
        stats.count(key)
    assert udp.nothing()


@pytest.mark.parametrize("value", ["", "a|b", "a\nb"])
def test_malformed_set_values_raise(udp, value):
    with pytest.raises(ValueError, match="Invalid set value"):
        stats.unique_set("foo", value)


@pytest.mark.parametrize(
    ("value", "error"),
    [(float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError), (True, TypeError)],
)
def test_non_numbers_and_non_finite_values_raise(udp, value, error):
    with pytest.raises(error):
        stats.timing("foo", value)


# --------------------------------------------------------------------------
# Disabled mode, reload, protocol errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statsd",
    [{}, {"host": None}, {"host": ""}, {"host": "127.0.0.1", "port": None}],
)
def test_disabled_stats_return_false_without_any_io(monkeypatch, socket_events, statsd):
    monkeypatch.setattr(kiln.config.CONFIG, "config", {"statsd": statsd})
    assert stats.count("foo") is False
    assert stats.gauge("foo", -1) is False
    with stats.Timer("foo"):
        pass
    assert socket_events == []
    assert stats.connection.socket is None


def test_socket_events_are_seen_when_enabled(udp, socket_events):
    assert stats.count("foo") is True
    assert "socket.connect" in socket_events


def test_reload_moves_stats_to_the_new_target(monkeypatch):
    first, second = UDPListener(), UDPListener()
    use_statsd(monkeypatch, host="127.0.0.1", port=first.port)
    stats.count("a")
    assert first.packet() == "a:1|c\n"
    use_statsd(monkeypatch, host="127.0.0.1", port=second.port)
    stats.count("b")
    assert second.packet() == "b:1|c\n"
    assert first.nothing()


def test_reload_through_config_load_moves_stats_too(monkeypatch, tmp_path):
    first, second = UDPListener(), UDPListener()
    path = tmp_path / "config.json"
    path.write_text(f'{{"statsd": {{"host": "127.0.0.1", "port": {first.port}}}}}')
    configuration = kiln.config.Configuration([str(path)], environ={})
    monkeypatch.setattr(kiln.config, "CONFIG", configuration)
    stats.count("a")
    assert first.packet() == "a:1|c\n"
    path.write_text(f'{{"statsd": {{"host": "127.0.0.1", "port": {second.port}}}}}')
    assert configuration.load() is True
    stats.count("b")
    assert second.packet() == "b:1|c\n"


def test_unknown_protocol_warns_once_and_sends_nothing(monkeypatch, caplog):
    use_statsd(monkeypatch, protocol="sctp", host="127.0.0.1", port=9)
    assert stats.count("foo") is False
    assert stats.count("foo") is False
    warnings = [r for r in caplog.records if "sctp" in r.getMessage()]
    assert len(warnings) == 1


def test_unresolvable_host_backs_off(monkeypatch, caplog):
    use_statsd(monkeypatch, host="host.invalid", port=8125)
    assert stats.count("foo") is False
    assert stats.connection.backoff == 0.625
    assert "Could not connect to statsd" in caplog.text


def test_send_error_resets_the_socket_and_returns_false(monkeypatch):
    # Over loopback, a UDP send to a closed port gets ECONNREFUSED on the next send.
    listener = UDPListener()
    use_statsd(monkeypatch, host="127.0.0.1", port=listener.port)
    assert stats.count("a") is True
    listener.sock.close()
    results = [stats.count("a") for _ in range(3)]
    assert False in results
    assert results[-1] is True  # reconnected after the failure


# --------------------------------------------------------------------------
# TCP backoff
# --------------------------------------------------------------------------


def test_tcp_backoff_grows_caps_and_resets_on_success(monkeypatch):
    # A bound socket that is not listening refuses connections; listen() later
    # opens the same port without a race.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    use_statsd(monkeypatch, protocol="tcp", host="127.0.0.1", port=sock.getsockname()[1])
    conn = stats.StatsConnection(backoff_initial=0.05, backoff_multiplier=2, backoff_max=0.1)
    assert conn.count("foo") is False
    assert conn.backoff == 0.1
    listener = TCPListener(sock)
    assert conn.count("foo") is False  # inside the backoff window: no attempt
    assert conn.socket is None
    time.sleep(0.06)
    assert conn.count("foo") is True
    assert conn.backoff == 0.05
    assert listener.read_lines(1) == ["foo:1|c"]
    conn.reset()


def test_clay_backoff_defaults(monkeypatch):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    use_statsd(monkeypatch, protocol="tcp", host="127.0.0.1", port=sock.getsockname()[1])
    conn = stats.StatsConnection()
    assert conn.count("foo") is False
    assert conn.backoff == 0.625
    started = time.monotonic()
    for _ in range(3):
        assert conn.count("foo") is False  # no new attempt: backoff unchanged
    assert conn.backoff == 0.625
    assert conn.next_retry > started
    for _ in range(30):
        conn.next_retry = 0.0  # skip the waits: each attempt still really fails
        conn.count("foo")
    assert conn.backoff == 10.0
    conn.reset()
    sock.close()


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_many_threads_deliver_every_line_intact(monkeypatch, protocol):
    threads, per_thread = 16, 50
    listener = TCPListener() if protocol == "tcp" else UDPListener()
    use_statsd(monkeypatch, protocol=protocol, host="127.0.0.1", port=listener.port)
    if protocol == "udp":
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    barrier = threading.Barrier(threads)

    def work(n):
        barrier.wait()
        for i in range(per_thread):
            assert stats.gauge(f"t{n}.g{i}", -i - 1) is True

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    expected = {
        f"t{n}.g{i}:0|g\nt{n}.g{i}:{-i - 1}|g" for n in range(threads) for i in range(per_thread)
    }
    if protocol == "tcp":
        lines = listener.read_lines(2 * len(expected))
        received = {"\n".join(lines[i : i + 2]) for i in range(0, len(lines), 2)}
    else:
        received = {listener.packet().rstrip("\n") for _ in expected}
    for worker in workers:
        worker.join()
    assert received == expected


# --------------------------------------------------------------------------
# Timer, decorators, batches
# --------------------------------------------------------------------------


def test_timer_exposes_elapsed_ms_and_sends_it(udp):
    timer = stats.Timer("foo")
    assert timer.ms == 0.0
    with timer as t:
        time.sleep(0.01)
        assert t.ms > 0
    assert t is timer
    assert t.ms >= 10
    assert udp.packet() == f"foo:{stats._number(t.ms)}|ms\n"
    assert t.ms == t.ms  # frozen after the block


def test_timer_sends_even_when_the_block_raises(udp):
    with pytest.raises(KeyError), stats.Timer("foo"):
        raise KeyError
    assert udp.packet().startswith("foo:")


def test_timer_rejects_a_bad_key():
    with pytest.raises(ValueError, match="Invalid stats key"):
        stats.Timer("a|b")


def test_wrapper_sends_calls_and_duration(udp):
    @stats.wrapper("foo")
    def add(a, b):
        return a + b

    assert add(1, 2) == 3
    assert add.__name__ == "add"
    assert udp.packet() == "foo.calls:1|c\n"
    assert udp.packet().startswith("foo.duration:")
    assert udp.nothing()


def test_wrapper_counts_exceptions_and_reraises(udp):
    @stats.wrapper("foo")
    def boom():
        raise RuntimeError

    with pytest.raises(RuntimeError):
        boom()
    assert udp.packet() == "foo.calls:1|c\n"
    assert udp.packet() == "foo.exceptions:1|c\n"
    assert udp.packet().startswith("foo.duration:")


def test_composable_wrappers_default_to_the_function_name(udp):
    @stats.successes_wrapper()
    @stats.calls_wrapper()
    def job():
        return "done"

    assert job() == "done"
    assert udp.packet() == "job.calls:1|c\n"
    assert udp.packet() == "job.successes:1|c\n"


def test_composable_wrappers_take_custom_keys(udp):
    @stats.exceptions_wrapper("errors.job")
    @stats.timing_wrapper("time.job")
    def job():
        raise ValueError

    with pytest.raises(ValueError):
        job()
    assert udp.packet().startswith("time.job:")
    assert udp.packet() == "errors.job:1|c\n"


def test_batch_sends_its_lines_in_one_packet_with_its_prefix(monkeypatch):
    listener = UDPListener()
    use_statsd(monkeypatch, host="127.0.0.1", port=listener.port, prefix="svc")
    with stats.Batch("worker") as batch:
        batch.count("jobs", 3)
        batch.timing("run", 12.5)
        batch.gauge("depth", -2)
        batch.add("raw:1|c\n")
    assert listener.packet() == (
        "svc.worker.jobs:3|c\nsvc.worker.run:12.5|ms\n"
        "svc.worker.depth:0|g\nsvc.worker.depth:-2|g\nraw:1|c\n"
    )
    assert batch.lines == []
    assert batch.send_all() is True  # nothing left to send
    assert listener.nothing()


def test_large_udp_batches_are_split_under_the_datagram_limit(udp):
    batch = stats.Batch("b.", connection=stats.connection)
    for i in range(200):
        batch.count(f"key{i:03}")
    assert batch.send_all() is True
    received = ""
    while received.count("\n") < 200:
        packet = udp.packet()
        assert len(packet.encode()) <= stats.MAX_DATAGRAM
        received += packet
    assert received.splitlines() == [f"b.key{i:03}:1|c" for i in range(200)]


@given(st.lists(st.integers(min_value=0, max_value=2 * stats.MAX_DATAGRAM), max_size=40))
def test_datagrams_are_whole_lines_filled_up_to_the_limit(lengths):
    data = b"".join(b"x" * length + b"\n" for length in lengths)
    chunks = stats._datagrams(data)
    assert b"".join(chunks) == data
    for chunk, after in zip(chunks, [*chunks[1:], None], strict=True):
        assert chunk.endswith(b"\n") or not data
        # Within the limit, unless it is one long line alone.
        assert len(chunk) <= stats.MAX_DATAGRAM or chunk.count(b"\n") == 1
        if after is not None:  # full: the next line would not have fitted
            assert len(chunk) + after.index(b"\n") + 1 > stats.MAX_DATAGRAM


def test_a_last_line_without_a_newline_is_sent_too():
    data = b"a" * stats.MAX_DATAGRAM + b"\n" + b"b" * 10
    assert stats._datagrams(data) == [b"a" * stats.MAX_DATAGRAM + b"\n", b"b" * 10]
    assert stats._datagrams(b"c" * (stats.MAX_DATAGRAM + 1)) == [b"c" * (stats.MAX_DATAGRAM + 1)]


def test_large_tcp_batches_are_sent_whole(tcp):
    with stats.Batch() as batch:
        for i in range(200):
            batch.count(f"key{i:03}")
    assert tcp.read_lines(200) == [f"key{i:03}:1|c" for i in range(200)]


def test_registered_settings_document_statsd():
    for key in ("protocol", "host", "port", "prefix", "timeout"):
        setting = kiln.config.SETTINGS[f"statsd.{key}"]
        assert setting.reload is True
        assert setting.doc
