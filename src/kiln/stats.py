"""A statsd client: counters, timers, gauges, sets, over UDP or TCP.

Clay's ``clay.stats`` API with its weaknesses fixed: the shared socket is
guarded by a lock, settings are compared at every send (a config reload
moves the client to the new target), sample rates really sample, counters
keep their fractions, absolute negative gauges are sent the statsd way,
:class:`Timer` exposes the elapsed time, and lines can be batched
(:class:`Batch`) or emitted by composable decorators.

Every function returns whether a line was handed to the network. Stats never
raise for network trouble: a failed send is logged and returns ``False``.
With no ``statsd.host`` the client is disabled and does no I/O at all.
Malformed keys or values (a ``:``, ``|``, ``@`` or line break in a key, a
NaN) raise :class:`ValueError`: they are programming errors.

Example::

    from kiln import stats

    stats.count("signups")                      # signups:1|c
    stats.count("hits", sample_rate=0.1)        # hits:1|c|@0.1, one call in ten
    stats.timing("db.query", 10.5)              # db.query:10.5|ms
    stats.gauge("queue.size", -5)               # queue.size:0|g + queue.size:-5|g
    stats.gauge_delta("queue.size", 3)          # queue.size:+3|g
    with stats.Timer("render") as timer:
        render()
    print(timer.ms)

    @stats.wrapper("api.search")                # api.search.calls/duration/exceptions
    def search(query): ...
"""

from __future__ import annotations

import functools
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import NamedTuple, ParamSpec, TypeVar

from kiln import config
from kiln.config import Setting, register_setting

__all__ = [
    "Batch",
    "StatsConnection",
    "Timer",
    "calls_wrapper",
    "connection",
    "count",
    "exceptions_wrapper",
    "gauge",
    "gauge_delta",
    "send",
    "successes_wrapper",
    "timing",
    "timing_wrapper",
    "unique_set",
    "wrapper",
]

logger = logging.getLogger("kiln.stats")

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds between two warnings of failed sends.
WARNING_INTERVAL = 60.0
#: Largest UDP payload sent at once: fits an Ethernet MTU, as statsd advises.
MAX_DATAGRAM = 1432

for _setting in (
    Setting(
        "statsd.protocol",
        (str,),
        "udp",
        "Transport to statsd: `udp` or `tcp`.",
        True,
        ("udp", "tcp"),
    ),
    Setting(
        "statsd.host",
        (str, None),
        None,
        "statsd host. Unset or null disables stats (no I/O; functions return false).",
        True,
    ),
    Setting("statsd.port", (int, None), 8125, "statsd port; null disables stats.", True),
    Setting(
        "statsd.prefix",
        (str, None),
        None,
        "Prepended to every key, with a dot (`myservice` gives `myservice.hits`).",
        True,
    ),
    Setting(
        "statsd.timeout",
        (int, float),
        1.0,
        "Seconds allowed to a TCP connect or send before the line is dropped.",
        True,
    ),
):
    register_setting(_setting)

_FORBIDDEN_IN_KEY = frozenset(":|@\n\r\0")


class _Target(NamedTuple):
    protocol: str
    host: str | None
    port: int | None
    prefix: str
    timeout: float


def _target() -> _Target:
    prefix = config.CONFIG.setting("statsd.prefix") or ""
    if prefix and not prefix.endswith("."):
        prefix += "."
    return _Target(
        config.CONFIG.setting("statsd.protocol"),
        config.CONFIG.setting("statsd.host"),
        config.CONFIG.setting("statsd.port"),
        prefix,
        config.CONFIG.setting("statsd.timeout"),
    )


def _check_key(key: str) -> str:
    if not key or _FORBIDDEN_IN_KEY.intersection(key):
        raise ValueError(
            f"Invalid stats key {key!r}: use a non-empty name without ':', '|', '@' or line breaks."
        )
    return key


def _number(value: float) -> str:
    """``value`` in positional notation without trailing zeros: 2.9, 10.5, 1, 0.0000001."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"A stats value must be a number, got {value!r}.")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"A stats value must be finite, got {value!r}.")
    if value == 0:  # -0.0 would read as a delta in a gauge
        return "0"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Metrics:
    """The metric methods, shared by :class:`StatsConnection` and :class:`Batch`."""

    def _key_prefix(self) -> str:
        raise NotImplementedError

    def _emit(self, lines: list[str]) -> bool:
        raise NotImplementedError

    def _key(self, key: str) -> str:
        return self._key_prefix() + _check_key(key)

    def count(self, key: str, n: float = 1, sample_rate: float | None = None) -> bool:
        """Add ``n`` to counter ``key``: ``key:n|c``.

        With ``0 < sample_rate < 1`` only that fraction of calls sends a line,
        tagged ``|@rate`` so statsd scales it back; the others return ``False``.
        """
        line = f"{self._key(key)}:{_number(n)}|c"
        if sample_rate is not None:
            if not 0 < sample_rate <= 1:
                raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}.")
            if sample_rate < 1:
                if random.random() >= sample_rate:
                    return False
                line += f"|@{_number(sample_rate)}"
        return self._emit([line])

    def timing(self, key: str, ms: float) -> bool:
        """Record a duration in milliseconds: ``key:ms|ms``."""
        return self._emit([f"{self._key(key)}:{_number(ms)}|ms"])

    def gauge(self, key: str, value: float) -> bool:
        """Set gauge ``key`` to ``value``, negative values included.

        statsd reads a leading sign as a delta, so a negative value is sent
        as ``key:0|g`` then ``key:-5|g`` in one packet.
        """
        name = self._key(key)
        text = _number(value)
        if text.startswith("-"):
            return self._emit([f"{name}:0|g", f"{name}:{text}|g"])
        return self._emit([f"{name}:{text}|g"])

    def gauge_delta(self, key: str, delta: float) -> bool:
        """Change gauge ``key`` by ``delta``: ``key:+3|g`` or ``key:-3|g``."""
        text = _number(delta)
        sign = "" if text.startswith("-") else "+"
        return self._emit([f"{self._key(key)}:{sign}{text}|g"])

    def unique_set(self, key: str, value: object) -> bool:
        """Count the distinct values of ``key``: ``key:value|s``."""
        text = str(value)
        if not text or {"|", "\n", "\r", "\0"}.intersection(text):
            raise ValueError(f"Invalid set value {text!r}: non-empty, without '|' or line breaks.")
        return self._emit([f"{self._key(key)}:{text}|s"])


class StatsConnection(_Metrics):
    """A thread-safe connection to the statsd server of the ``statsd`` settings.

    Reads ``statsd.protocol``, ``statsd.host``, ``statsd.port``,
    ``statsd.prefix`` and ``statsd.timeout`` at every send and reconnects
    when they change. After a failed connection it waits ``backoff`` seconds
    before trying again (sends meanwhile return ``False`` without I/O); the
    wait starts at ``backoff_initial``, grows by ``backoff_multiplier`` per
    failure up to ``backoff_max`` and resets on success.

    With ``target`` (``(protocol, host, port, prefix, timeout)``) the
    connection sends there instead, whatever the settings say: this is how
    :mod:`kiln.metrics` sends to ``metrics.statsd_url``.
    """

    def __init__(
        self,
        *,
        backoff_initial: float = 0.5,
        backoff_multiplier: float = 1.25,
        backoff_max: float = 10.0,
        target: tuple[str, str, int, str, float] | None = None,
    ) -> None:
        self._fixed = _Target(*target) if target is not None else None
        #: When a failed send was last logged.
        self._warned_at = -math.inf
        self.backoff_initial = backoff_initial
        self.backoff_multiplier = backoff_multiplier
        self.backoff_max = backoff_max
        self.backoff = backoff_initial
        self.next_retry = 0.0
        self.socket: socket.socket | None = None
        self._target: _Target | None = None
        self._lock = threading.Lock()
        self._warned_protocols: set[str] = set()

    def _key_prefix(self) -> str:
        return (self._fixed or _target()).prefix

    def _emit(self, lines: list[str]) -> bool:
        return self.send("\n".join(lines))

    def send(self, line: str) -> bool:
        """Send ``line`` (one or more newline-separated stats) as is.

        A final newline is added when missing. Returns ``False`` when stats
        are disabled, backing off, or the send failed.
        """
        if not line.endswith("\n"):
            line += "\n"
        data = line.encode()
        target = self._fixed or _target()
        host, port = target.host, target.port
        if not host or port is None:
            return False
        with self._lock:
            if target != self._target:
                self._reset()
                self._target = target
            sock = self.socket or self._connect(target.protocol, host, port, target.timeout)
            if sock is None:
                return False
            try:
                if target.protocol == "udp":
                    for chunk in _datagrams(data):
                        sock.send(chunk)
                else:
                    sock.sendall(data)
            except OSError as exc:
                now = time.monotonic()
                # A statsd that is down must not flood the logs: one line a minute.
                if now - self._warned_at >= WARNING_INTERVAL:
                    self._warned_at = now
                    logger.warning("Could not send stats to %s:%s: %s", host, port, exc)
                self._reset()
                return False
        return True

    def _connect(self, protocol: str, host: str, port: int, timeout: float) -> socket.socket | None:
        if protocol not in ("udp", "tcp"):
            if protocol not in self._warned_protocols:
                self._warned_protocols.add(protocol)
                logger.warning(
                    "statsd.protocol %r is not known; use 'udp' or 'tcp'. Stats are not sent.",
                    protocol,
                )
            return None
        now = time.monotonic()
        if now < self.next_retry:
            return None
        try:
            if protocol == "tcp":
                sock = socket.create_connection((host, port), timeout)
            else:
                family, kind, proto, _name, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                # A full send buffer drops the datagram: stats never block a request.
                sock.setblocking(False)
                sock.connect(address)
        except OSError as exc:
            logger.warning(
                "Could not connect to statsd at %s:%s (%s); retrying in %.2f s.",
                host,
                port,
                exc,
                self.backoff,
            )
            self.next_retry = now + self.backoff
            self.backoff = min(self.backoff * self.backoff_multiplier, self.backoff_max)
            return None
        self.backoff = self.backoff_initial
        self.next_retry = 0.0
        self.socket = sock
        return sock

    def _reset(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = None

    def reset(self) -> None:
        """Close the socket and forget any backoff; the next send reconnects."""
        with self._lock:
            self._reset()
            self._target = None
            self.backoff = self.backoff_initial
            self.next_retry = 0.0


def _datagrams(data: bytes) -> list[bytes]:
    """Split newline-separated lines into payloads of at most :data:`MAX_DATAGRAM`
    bytes (a longer line goes alone). Each cut is found by one search."""
    end = len(data)
    if end <= MAX_DATAGRAM:
        return [data]
    chunks: list[bytes] = []
    start = 0
    while end - start > MAX_DATAGRAM:
        # After the last newline that fits; else after the long line's own.
        cut = data.rfind(b"\n", start, start + MAX_DATAGRAM) + 1
        if cut <= start:
            cut = data.find(b"\n", start) + 1 or end
        chunks.append(data[start:cut])
        start = cut
    if start < end:
        chunks.append(data[start:])
    return chunks


#: The process-wide connection used by the module functions.
connection = StatsConnection()


def send(line: str) -> bool:
    """Send a raw statsd line; see :meth:`StatsConnection.send`."""
    return connection.send(line)


def count(key: str, n: float = 1, sample_rate: float | None = None) -> bool:
    """Add ``n`` to a counter; see :meth:`StatsConnection.count`."""
    return connection.count(key, n, sample_rate)


def timing(key: str, ms: float) -> bool:
    """Record a duration in milliseconds; see :meth:`StatsConnection.timing`."""
    return connection.timing(key, ms)


def gauge(key: str, value: float) -> bool:
    """Set a gauge (negative values included); see :meth:`StatsConnection.gauge`."""
    return connection.gauge(key, value)


def gauge_delta(key: str, delta: float) -> bool:
    """Change a gauge by ``delta``; see :meth:`StatsConnection.gauge_delta`."""
    return connection.gauge_delta(key, delta)


def unique_set(key: str, value: object) -> bool:
    """Add a value to a set; see :meth:`StatsConnection.unique_set`."""
    return connection.unique_set(key, value)


class Batch(_Metrics):
    """Collect stats and send them together (Clay PR 29's bulk connection).

    Keys get ``prefix`` (after ``statsd.prefix``). Lines are sent by
    :meth:`send_all`, or on leaving the ``with`` block, as few packets as
    possible (UDP packets stay under :data:`MAX_DATAGRAM` bytes)::

        with stats.Batch("worker") as batch:
            batch.count("jobs", 3)
            batch.timing("run", 12.5)
    """

    def __init__(self, prefix: str = "", connection: StatsConnection | None = None) -> None:
        self.prefix = f"{prefix}." if prefix and not prefix.endswith(".") else prefix
        self.connection = connection
        self.lines: list[str] = []

    def _key_prefix(self) -> str:
        return _target().prefix + self.prefix

    def _emit(self, lines: list[str]) -> bool:
        self.lines.extend(lines)
        return True

    def add(self, line: str) -> None:
        """Queue a raw statsd line."""
        self.lines.append(line.rstrip("\n"))

    def send_all(self) -> bool:
        """Send the queued lines and empty the queue; ``True`` when there was nothing to send."""
        if not self.lines:
            return True
        lines, self.lines = self.lines, []
        return (self.connection or connection).send("\n".join(lines))

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.send_all()


class Timer:
    """Time a block and send its duration as ``key:<ms>|ms``, even when it raises.

    ``ms`` is the elapsed time in milliseconds: live inside the block, final
    after it (Clay's ``Timer`` gave ``None`` to ``as``)::

        with stats.Timer("db.query") as timer:
            run_query()
        logger.info("query took %.1f ms", timer.ms)
    """

    def __init__(self, key: str, connection: StatsConnection | None = None) -> None:
        self.key = _check_key(key)
        self.connection = connection
        self._start: float | None = None
        self._ms: float | None = None

    @property
    def ms(self) -> float:
        """Milliseconds since the block started (final once it ended; 0 before it starts)."""
        if self._ms is not None:
            return self._ms
        if self._start is None:
            return 0.0
        return (time.perf_counter() - self._start) * 1000

    def __enter__(self) -> Timer:
        self._ms = None
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ms = self.ms
        (self.connection or connection).timing(self.key, self._ms)


# --------------------------------------------------------------------------
# Decorators (Clay's ``wrapper`` and PR 35's composable ones)
# --------------------------------------------------------------------------


def _key_for(func: Callable[..., object], key: str | None, suffix: str) -> str:
    return key if key is not None else f"{func.__name__}.{suffix}"


def calls_wrapper(
    key: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count every call in ``key`` (default ``<function name>.calls``), before it runs."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        name = _check_key(_key_for(func, key, "calls"))

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            count(name)
            return func(*args, **kwargs)

        return wrapped

    return decorator


def timing_wrapper(
    key: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Time every call into ``key`` (default ``<function name>.duration``), raising or not."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        name = _check_key(_key_for(func, key, "duration"))

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            with Timer(name):
                return func(*args, **kwargs)

        return wrapped

    return decorator


def exceptions_wrapper(
    key: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count calls that raise in ``key`` (default ``<function name>.exceptions``), then re-raise."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        name = _check_key(_key_for(func, key, "exceptions"))

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except BaseException:
                count(name)
                raise

        return wrapped

    return decorator


def successes_wrapper(
    key: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count calls that return normally in ``key`` (default ``<function name>.successes``)."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        name = _check_key(_key_for(func, key, "successes"))

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            rv = func(*args, **kwargs)
            count(name)
            return rv

        return wrapped

    return decorator


def wrapper(prefix: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Clay's decorator: ``prefix.calls`` before each call, ``prefix.duration``
    after it, and ``prefix.exceptions`` when it raises (then re-raised)."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        timed = timing_wrapper(f"{prefix}.duration")(
            exceptions_wrapper(f"{prefix}.exceptions")(func)
        )
        return calls_wrapper(f"{prefix}.calls")(timed)

    return decorator
