"""What the framework measures, and where it sends it: StatsD, Prometheus.

One interface, :class:`Recorder` (counters, timers, gauges and sets of
:class:`Metric` values with labels), has two implementations:
:class:`StatsDRecorder` (kiln's own statsd client, :mod:`kiln.stats`, with
DogStatsD or Telegraf tags as an option) and :class:`PrometheusRecorder`
(``prometheus_client``, multiprocess-safe under gunicorn, served on
``/__metrics__``). Both are off by default; ``metrics.statsd_url:
udp://host:port`` and ``metrics.prometheus: true`` switch them on.

:class:`Metrics` is what an app keeps (``KilnState.metrics``, ``None`` when
both are off, so a request pays one attribute check): it turns what kiln
sees -- a request and its route template, a backend call, a retried unit of
work, a configuration reload, delivered events -- into the metrics of
:data:`CATALOGUE`. Labels never carry user data: routes are templates
(``/v1/mushrooms/<id>``), methods outside HTTP's are ``other``, and user
ids are only counted, hashed, in a statsd set.

A metrics backend that is down never fails or slows a request: statsd
datagrams are sent on a non-blocking socket and dropped when they cannot
go, Prometheus values live in the process (or in ``mmap`` files).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from kiln._state import kiln_hook
from kiln.config import Setting, register_setting
from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import BackendError, ConfigError
from kiln.stats import MAX_DATAGRAM, StatsConnection
from kiln.tracing import span

if TYPE_CHECKING:
    from flask import Flask, Response

    from kiln._state import KilnState
    from kiln.config import Configuration

__all__ = [
    "CATALOGUE",
    "Metric",
    "Metrics",
    "PrometheusRecorder",
    "Recorder",
    "StatsDRecorder",
    "build_metrics",
    "install_metrics",
    "instrument_backend",
]

logger = logging.getLogger("kiln.metrics")

for _setting in (
    Setting(
        "metrics.statsd_url",
        (str, None),
        None,
        "Send the framework's metrics to this statsd server, like `udp://localhost:8125` "
        "(null: off).",
    ),
    Setting(
        "metrics.statsd_prefix",
        (str,),
        "kiln",
        "Prefix of the statsd metric names (`kiln` gives `kiln.request_duration`).",
    ),
    Setting(
        "metrics.statsd_tags",
        (str, None),
        None,
        "Send labels as tags: `dogstatsd` (`|#key:value`) or `telegraf` (`,key=value`); "
        "null puts their values in the metric name.",
        choices=(None, "dogstatsd", "telegraf"),
    ),
    Setting(
        "metrics.prometheus",
        (bool,),
        False,
        "Serve the framework's metrics to Prometheus on `/__metrics__`.",
    ),
    Setting(
        "metrics.prometheus_token",
        (str, None),
        None,
        "Bearer token `/__metrics__` requires; null: only loopback clients may read it.",
        True,
    ),
):
    register_setting(_setting)


class Metric(NamedTuple):
    """A metric: its name, kind and label names, and what it means.

    ``kind`` is ``counter``, ``timer`` (a duration: a statsd timer, a
    Prometheus histogram in seconds), ``gauge`` or ``set`` (distinct
    values: a statsd set; not sent to Prometheus).
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    doc: str


#: Requests are counted by their duration's timer: Prometheus's
#: ``kiln_request_duration_seconds_count``, statsd's timer count
#: (``kiln.request_duration...count`` once statsd aggregates it).
REQUEST_DURATION = Metric(
    "request_duration",
    "timer",
    ("method", "route", "status"),
    "HTTP requests answered, and the time from each one's arrival to its response.",
)
SUBREQUESTS = Metric(
    "batch_subrequests",
    "counter",
    ("method", "route", "status"),
    "Sub-requests of batches answered.",
)
RESOURCE_ACTIONS = Metric(
    "resource_actions",
    "counter",
    ("resource", "action", "status"),
    "Resource requests and batch sub-requests, by action "
    "(create, get, list, update, delete; batch).",
)
BACKEND_DURATION = Metric(
    "backend_duration",
    "timer",
    ("backend", "method"),
    "Time of a storage, permission or cache backend call.",
)
BACKEND_ERRORS = Metric(
    "backend_errors",
    "counter",
    ("backend", "method"),
    "Backend calls that failed with a BackendError.",
)
RETRIES = Metric(
    "unit_of_work_retries",
    "counter",
    ("reason",),
    "Units of work run again: `transient` (the database aborted a transaction) "
    "or `conflict` (a record changed meanwhile).",
)
AUTHENTICATIONS = Metric(
    "authentications",
    "counter",
    ("policy", "outcome"),
    "Requests by authentication outcome: `success` (per policy), `failure` (401), `anonymous`.",
)
UNIQUE_USERS = Metric(
    "unique_users", "set", (), "Distinct authenticated users (hashed ids; statsd only)."
)
CONFIG_RELOADS = Metric("config_reloads", "counter", (), "Successful configuration reloads.")
EVENTS = Metric(
    "events",
    "counter",
    ("outcome",),
    "Resource events handed to listeners: `delivered`, `failed` (a listener raised).",
)

REPLICA_READS = Metric(
    "replica_reads",
    "counter",
    ("target",),
    "Safe requests of a PostgreSQL storage with read replicas, by where their reads went: "
    "`replica`, `primary` (a recent write, If-Match, no fresh replica), `fallback` (the "
    "replica failed; read again on the primary).",
)
POOL_WAIT = Metric(
    "pool_wait",
    "timer",
    ("pool",),
    "Time a request waited for a connection of a PostgreSQL pool (`host:port/dbname`): "
    "checkouts that took at least 1 ms (no connection was idle).",
)

#: Every metric the framework sends.
CATALOGUE: tuple[Metric, ...] = (
    REQUEST_DURATION,
    SUBREQUESTS,
    RESOURCE_ACTIONS,
    BACKEND_DURATION,
    BACKEND_ERRORS,
    RETRIES,
    REPLICA_READS,
    POOL_WAIT,
    AUTHENTICATIONS,
    UNIQUE_USERS,
    CONFIG_RELOADS,
    EVENTS,
)

#: Label values of ``method``: anything else is ``other``, so a client cannot
#: make new series up.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Resource actions by ``(route kind, method)``.
_ACTIONS = {
    ("collection", "GET"): "list",
    ("collection", "HEAD"): "list",
    ("collection", "POST"): "create",
    ("collection", "DELETE"): "delete",
    ("record", "GET"): "get",
    ("record", "HEAD"): "get",
    ("record", "PUT"): "update",
    ("record", "PATCH"): "update",
    ("record", "DELETE"): "delete",
}
UNMATCHED = "unmatched"
#: Shortest checkout recorded as a pool wait: taking an idle connection costs
#: microseconds, so every request would otherwise pay for a wait that was none.
POOL_WAIT_FLOOR = 0.001
#: Hashed user ids :class:`Metrics` keeps.
DIGESTS_KEPT = 4096
#: Longest a statsd line is held back before it is sent (see :class:`StatsDRecorder`).
HOLD_SECONDS = 1.0


# --------------------------------------------------------------------------
# Recorders
# --------------------------------------------------------------------------


class Recorder(ABC):
    """Where metric values go. ``values`` are the label values, in the
    metric's label order. Implementations never raise for their backend's
    trouble and never block."""

    @abstractmethod
    def count(self, metric: Metric, values: tuple[str, ...], n: float = 1) -> None:
        """Add ``n`` to a counter."""

    @abstractmethod
    def time(self, metric: Metric, values: tuple[str, ...], seconds: float) -> None:
        """Record a duration."""

    @abstractmethod
    def gauge(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        """Set a gauge."""

    @abstractmethod
    def unique(self, metric: Metric, value: str) -> None:
        """Note one value of a set (distinct values are counted)."""

    def flush(self) -> None:  # noqa: B027 - nothing held back by default
        """Send what this thread recorded and holds back (the end of a request)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what the recorder holds."""


class StatsDRecorder(Recorder):
    """Metrics as statsd lines, sent over UDP to ``url`` (``udp://host:port``).

    Without ``tags``, label values are appended to the name
    (``kiln.resource_actions.mushroom.get.200``); ``tags="dogstatsd"`` sends
    ``kiln.resource_actions:1|c|#resource:mushroom,...`` and ``tags="telegraf"``
    sends ``kiln.resource_actions,resource=mushroom,...:1|c``.

    A thread's lines are held back until :meth:`flush` (the end of each
    request; a long batch's also when they fill a datagram or the oldest is
    :data:`HOLD_SECONDS` old). Flushed lines then wait, all threads' together,
    until they fill a datagram (:data:`~kiln.stats.MAX_DATAGRAM` bytes: a few
    requests) or the oldest is :data:`HOLD_SECONDS` old (a thread sends them
    when no request does): a send costs a request more than all its lines.
    Datagrams go out on a non-blocking socket: when statsd is down they are
    dropped.
    """

    def __init__(self, url: str, prefix: str = "kiln", tags: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "udp" or not parts.hostname or not parts.port:
            raise ConfigError(
                f"metrics.statsd_url {url!r} is not a statsd address; "
                "use udp://host:port, like udp://localhost:8125."
            )
        self.tags = tags
        self.connection = StatsConnection(
            target=("udp", parts.hostname, parts.port, f"{prefix}." if prefix else "", 1.0)
        )
        #: ``(name + ":", tags after the value)`` of each metric and label values seen.
        self._names: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}
        #: The whole line of a counter's ``+1`` (most of a request's lines).
        self._ones: dict[tuple[str, tuple[str, ...]], str] = {}
        self._held = _Held()
        #: Flushed lines (one text per flush) waiting for a datagram to fill,
        #: their size, when the first came; all guarded by ``_lock``.
        self._outbox: list[str] = []
        self._outbox_size = 0
        self._outbox_since = 0.0
        self._lock = threading.Lock()
        #: The process whose thread sends old lines (none yet; a fork has none).
        self._sender_pid = 0
        self._closed = threading.Event()

    def _name(self, metric: Metric, values: tuple[str, ...]) -> tuple[str, str]:
        """The dotted name (with the ``:`` before the value) and tag suffix of
        ``metric`` with label ``values``, made once (callers look them up first)."""
        name = self.connection._key_prefix() + metric.name
        suffix = ""
        if values:
            pairs = list(zip(metric.labels, values, strict=True))
            if self.tags == "telegraf":
                name += "".join(f",{label}={_tag(value)}" for label, value in pairs)
            elif self.tags == "dogstatsd":
                suffix = "|#" + ",".join(f"{label}:{_tag(value)}" for label, value in pairs)
            else:
                name = ".".join([name, *(_segment(value) for value in values)])
        rv = self._names[(metric.name, values)] = (name + ":", suffix)
        return rv

    def _send(self, metric: Metric, values: tuple[str, ...], text: str) -> None:
        name, suffix = self._names.get((metric.name, values)) or self._name(metric, values)
        self._hold(name + text + suffix)

    def _hold(self, line: str) -> None:
        held = self._held
        lines = held.lines
        if lines is None:
            held.lines = [line]
            held.size = len(line)
            held.since = time.monotonic()
            return
        lines.append(line)
        held.size += len(line) + 1
        # A request's lines go out together (flush()); a long batch's, when full
        # or old (the clock is read every 16 lines: a request has fewer).
        if held.size >= MAX_DATAGRAM or (
            not len(lines) % 16 and time.monotonic() - held.since >= HOLD_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        held = self._held
        lines = held.lines
        if lines is None:
            return
        held.lines = None
        text = "\n".join(lines)
        size = len(text) + 1  # with its newline
        now = time.monotonic()
        with self._lock:
            outbox = self._outbox
            if outbox and self._outbox_size + size > MAX_DATAGRAM:
                # It does not fit in the datagram that waits: that one leaves.
                self._outbox, self._outbox_size, self._outbox_since = [text], size, now
            else:
                if not outbox:
                    self._outbox_since = now
                outbox.append(text)
                self._outbox_size += size
                if now - self._outbox_since < HOLD_SECONDS and not self._closed.is_set():
                    if self._sender_pid != os.getpid():
                        self._start_sender()
                    return
                self._outbox, self._outbox_size = [], 0
        self.connection.send("\n".join(outbox))

    def _start_sender(self) -> None:
        """Start this process's thread sending old lines (``_lock`` held)."""
        self._sender_pid = os.getpid()
        threading.Thread(target=self._send_old, name="kiln-statsd", daemon=True).start()

    def _send_old(self) -> None:
        """Send the flushed lines once the oldest is :data:`HOLD_SECONDS` old,
        until the recorder is closed (a thread's loop)."""
        while not self._closed.wait(max(HOLD_SECONDS, 0.01) / 2):
            self._send_outbox(HOLD_SECONDS)

    def _send_outbox(self, age: float) -> None:
        """Send the flushed lines if the oldest is ``age`` seconds old."""
        with self._lock:
            outbox = self._outbox
            if not outbox or time.monotonic() - self._outbox_since < age:
                return
            self._outbox, self._outbox_size = [], 0
        self.connection.send("\n".join(outbox))

    def count(self, metric: Metric, values: tuple[str, ...], n: float = 1) -> None:
        if n == 1:
            key = (metric.name, values)
            line = self._ones.get(key)
            if line is None:
                name, suffix = self._names.get(key) or self._name(metric, values)
                line = self._ones[key] = f"{name}1|c{suffix}"
            self._hold(line)
        else:
            self._send(metric, values, f"{n:g}|c")

    def time(self, metric: Metric, values: tuple[str, ...], seconds: float) -> None:
        self._send(metric, values, f"{seconds * 1000:.3f}|ms")

    def gauge(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        # statsd reads a leading sign as a delta: a negative gauge goes through zero.
        if value < 0:
            self._send(metric, values, "0|g")
        self._send(metric, values, f"{value:g}|g")

    def unique(self, metric: Metric, value: str) -> None:
        self._send(metric, (), f"{value}|s")

    def close(self) -> None:
        self._closed.set()
        self.flush()
        self._send_outbox(0)
        self.connection.reset()


class _Held(threading.local):
    """A thread's statsd lines held back: ``None`` or at least one, their
    size once joined, and when the first was held."""

    lines: list[str] | None = None
    size = 0
    since = 0.0


def _segment(value: str) -> str:
    """``value`` as one dotted-name segment: ``/v1/mushrooms/<id>`` -> ``v1_mushrooms_id``."""
    text = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in value.replace("<", ""))
    return text.replace(">", "").strip("_") or "_"


def _tag(value: str) -> str:
    # Tag separators of either dialect never reach the wire.
    return "".join("_" if ch in ",:|=#@ \n\r" else ch for ch in value)


class PrometheusRecorder(Recorder):
    """Metrics as ``prometheus_client`` collectors, named ``kiln_<name>``.

    Counters end with ``_total``, timers are histograms in seconds
    (``kiln_request_duration_seconds``). Under gunicorn, set
    ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server
    starts (as ``prometheus_client`` requires): every worker writes its
    values there and :meth:`exposition` adds them up.
    """

    def __init__(self, metrics: Iterable[Metric] = CATALOGUE, namespace: str = "kiln") -> None:
        import prometheus_client

        self._client = prometheus_client
        self.registry = prometheus_client.CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is None and "gunicorn.workers.base" in sys.modules:
            logger.warning(
                "metrics.prometheus is on in a gunicorn worker without PROMETHEUS_MULTIPROC_DIR: "
                "each worker counts and serves only its own requests. Set it to an empty "
                "directory before gunicorn starts (docs/observability.md)."
            )
        self.namespace = namespace
        self._collectors: dict[str, Any] = {}
        #: The child of each metric and label values seen (``labels()`` checks
        #: and locks on every call: a request would pay that several times).
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        #: What adds to each counter and histogram child: see :func:`_adder`.
        self._adders: dict[tuple[str, tuple[str, ...]], Callable[[float], None]] = {}
        self._lock = threading.Lock()
        for metric in metrics:
            if metric.kind != "set":  # sets have no Prometheus counterpart
                self._declare(metric)

    def _declare(self, metric: Metric) -> Any:
        """The collector of ``metric``, made on first use."""
        client = self._client
        with self._lock:
            collector = self._collectors.get(metric.name)
            if collector is None:
                name = f"{self.namespace}_{metric.name}"
                extra: dict[str, Any] = {}
                if metric.kind == "timer":
                    kind, name = client.Histogram, name + "_seconds"
                elif metric.kind == "gauge":
                    kind, extra = client.Gauge, {"multiprocess_mode": "livesum"}
                else:
                    kind = client.Counter
                collector = kind(name, metric.doc, metric.labels, registry=self.registry, **extra)
                self._collectors[metric.name] = collector
        return collector

    def _child(self, metric: Metric, values: tuple[str, ...]) -> Any:
        key = (metric.name, values)
        child = self._children.get(key)
        if child is None:
            collector = self._collectors.get(metric.name)
            if collector is None:
                collector = self._declare(metric)
            child = self._children[key] = collector.labels(*values) if values else collector
        return child

    def _add(self, metric: Metric, values: tuple[str, ...], amount: float) -> None:
        key = (metric.name, values)
        add = self._adders.get(key)
        if add is None:
            add = self._adders[key] = _adder(self._child(metric, values))
        add(amount)

    def count(self, metric: Metric, values: tuple[str, ...], n: float = 1) -> None:
        self._add(metric, values, n)

    def time(self, metric: Metric, values: tuple[str, ...], seconds: float) -> None:
        self._add(metric, values, seconds)

    def gauge(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        self._child(metric, values).set(value)

    def unique(self, metric: Metric, value: str) -> None:
        pass  # a set of ids would grow without bound; statsd counts them

    def exposition(self) -> tuple[bytes, str]:
        """The text of every metric (all workers' in multiprocess mode), and its type."""
        client = self._client
        registry = self.registry
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            registry = client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return client.generate_latest(registry), client.CONTENT_TYPE_LATEST


def _adder(child: Any) -> Callable[[float], None]:
    """What adds an amount to a counter or histogram ``child``: its values'
    own ``inc``, straight.

    ``Counter.inc`` and ``Histogram.observe`` check on every call what
    :class:`PrometheusRecorder` settles once (a child with labels, a
    positive amount), and a histogram looks its bucket up one bound at a
    time; each of their multiprocess values then locks, checks the pid and
    writes its ``mmap`` file (a histogram's sum and bucket: two). Without
    the values ``prometheus_client`` keeps today (``_value``; ``_sum``,
    ``_buckets``, ``_upper_bounds``), the public methods are used.
    """
    value = getattr(child, "_value", None)
    if value is not None:
        return value.inc  # type: ignore[no-any-return]
    total = getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    if total is None or bounds is None or buckets is None:
        return child.inc if hasattr(child, "inc") else child.observe  # type: ignore[no-any-return]
    add_to_sum = total.inc
    bounds = tuple(bounds)  # sorted, +Inf last: every amount has a bucket
    bucket_incs = tuple(bucket.inc for bucket in buckets)

    def observe(amount: float) -> None:
        add_to_sum(amount)
        bucket_incs[bisect_left(bounds, amount)](1)

    return observe


class _Fanout(Recorder):
    """Several recorders as one."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.recorders = recorders

    def count(self, metric: Metric, values: tuple[str, ...], n: float = 1) -> None:
        for recorder in self.recorders:
            recorder.count(metric, values, n)

    def time(self, metric: Metric, values: tuple[str, ...], seconds: float) -> None:
        for recorder in self.recorders:
            recorder.time(metric, values, seconds)

    def gauge(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        for recorder in self.recorders:
            recorder.gauge(metric, values, value)

    def unique(self, metric: Metric, value: str) -> None:
        for recorder in self.recorders:
            recorder.unique(metric, value)

    def flush(self) -> None:
        for recorder in self.recorders:
            recorder.flush()

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.close()


# --------------------------------------------------------------------------
# What the framework measures
# --------------------------------------------------------------------------


class Metrics:
    """An app's metrics: what kiln observes, turned into :data:`CATALOGUE`'s values."""

    def __init__(
        self,
        recorder: Recorder,
        prometheus: PrometheusRecorder | None = None,
        *,
        salt: str = "kiln",
    ) -> None:
        self.recorder = recorder
        #: The recorder ``/__metrics__`` serves, when Prometheus is on.
        self.prometheus = prometheus
        #: ``route template -> (resource name, route kind)`` of resource routes.
        self.resources: dict[str, tuple[str, str]] = {}
        self._salt = salt.encode()[:64]
        #: Hashed user ids by id (a user sends many requests); emptied when full.
        self._digests: dict[str, str] = {}

    def request(
        self, environ: Mapping[str, Any], method: str, route: str | None, status: int
    ) -> None:
        """Record a request (or batch sub-request) answered with ``status``.

        ``route`` is the template the request matched (``None``: none).
        """
        recorder = self.recorder
        method = method if method in _METHODS else "other"
        template = route or UNMATCHED
        code = str(status)
        values = (method, template, code)
        if environ.get("kiln.subrequest"):
            recorder.count(SUBREQUESTS, values)
        else:
            started = environ["kiln.start"]
            recorder.time(REQUEST_DURATION, values, time.perf_counter() - started)
            self._authentication(environ, status)
        resource = self.resources.get(template)
        if resource is not None:
            name, kind = resource
            action = "batch" if kind == "batch" else _ACTIONS.get((kind, method), "other")
            recorder.count(RESOURCE_ACTIONS, (name, action, code))
        if not environ.get("kiln.subrequest"):
            recorder.flush()  # the request's lines, its backends' and sub-requests' included

    def _authentication(self, environ: Mapping[str, Any], status: int) -> None:
        identity = environ.get("kiln.identity")
        if identity is not None:
            self.recorder.count(AUTHENTICATIONS, (str(identity.policy), "success"))
            user = str(identity.prefixed_id)
            digest = self._digests.get(user)
            if digest is None:
                if len(self._digests) >= DIGESTS_KEPT:
                    self._digests.clear()
                digest = self._digests[user] = hashlib.blake2b(
                    user.encode(), key=self._salt, digest_size=12
                ).hexdigest()
            self.recorder.unique(UNIQUE_USERS, digest)
        elif status == 401:
            self.recorder.count(AUTHENTICATIONS, ("none", "failure"))
        else:
            self.recorder.count(AUTHENTICATIONS, ("none", "anonymous"))

    def routed(self, target: str) -> None:
        """A safe request's reads went to ``target`` (``replica``, ``primary``, ``fallback``)."""
        self.recorder.count(REPLICA_READS, (target,))

    def pool_wait(self, pool: str, seconds: float) -> None:
        """A connection of ``pool`` was handed out after ``seconds`` (recorded
        from :data:`POOL_WAIT_FLOOR` up: the request waited for it)."""
        if seconds >= POOL_WAIT_FLOOR:
            self.recorder.time(POOL_WAIT, (pool,), seconds)

    def retried(self, reason: str) -> None:
        """A unit of work runs again (``transient`` or ``conflict``)."""
        self.recorder.count(RETRIES, (reason,))

    def events(self, delivered: int, failed: int) -> None:
        """Events handed to listeners, and how many listeners raised."""
        if delivered:
            self.recorder.count(EVENTS, ("delivered",), delivered)
        if failed:
            self.recorder.count(EVENTS, ("failed",), failed)

    def reloaded(self, config: Configuration) -> None:
        """The configuration was reloaded (a :meth:`Configuration.add_listener` listener)."""
        self.recorder.count(CONFIG_RELOADS, ())
        self.recorder.flush()

    def close(self, config: Configuration) -> None:
        """Stop counting ``config``'s reloads; release the recorders."""
        config.remove_listener(self.reloaded)
        self.recorder.close()


def build_metrics(config: Configuration) -> Metrics | None:
    """The metrics ``config`` asks for, or ``None`` when they are off.

    :raises ConfigError: ``metrics.statsd_url`` is not a ``udp://host:port`` address.
    """
    recorders: list[Recorder] = []
    url = config.setting("metrics.statsd_url")
    if url:
        recorders.append(
            StatsDRecorder(
                url, config.setting("metrics.statsd_prefix"), config.setting("metrics.statsd_tags")
            )
        )
    prometheus = None
    if config.setting("metrics.prometheus"):
        prometheus = PrometheusRecorder()
        recorders.append(prometheus)
    if not recorders:
        return None
    recorder = recorders[0] if len(recorders) == 1 else _Fanout(recorders)
    return Metrics(recorder, prometheus, salt=str(config.setting("project.name")))


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

#: Backend methods not timed: context managers, the request router (it runs
#: the whole unit of work), and what runs once at startup.
_UNTIMED = frozenset(
    {"close", "transaction", "snapshot", "route_request", "declare_indexes", "initialize_schema"}
)
_depth = threading.local()


def instrument_backend(
    backend: Any, kind: str, base: type, metrics: Metrics | None, tracer: Any = None
) -> None:
    """Measure every public method of ``base`` on ``backend`` (in place).

    With ``metrics``, each call records ``backend_duration{backend=kind,
    method}``, and ``backend_errors`` when it raises a
    :class:`~kiln.exceptions.BackendError`; with ``tracer`` (OpenTelemetry),
    each call is a ``<kind>.<method>`` span. A call a measured method makes
    on its own backend is part of the outer one (a call on another backend
    is measured too).
    """
    recorder = metrics.recorder if metrics is not None else None
    database: Any = getattr(backend, "database", None)
    if metrics is not None and hasattr(database, "observer"):
        # PostgreSQL: its pools' waits and its replicas' reads.
        database.observer = metrics
        for replica in database.replicas.replicas if database.replicas is not None else ():
            replica.database.observer = metrics
    for name in dir(base):
        if name.startswith("_") or name in _UNTIMED:
            continue
        if callable(getattr(base, name)):
            method = getattr(backend, name)
            if recorder is not None:
                method = _timed(method, kind, name, recorder)
            if tracer is not None:
                method = _traced(method, kind, name, tracer)
            setattr(backend, name, method)


def _timed(method: Callable[..., Any], kind: str, name: str, recorder: Recorder) -> Any:
    values = (kind, name)
    inside = f"timed_{kind}"  # this thread is in a timed call of this backend

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, inside, False):
            return method(*args, **kwargs)
        setattr(_depth, inside, True)
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except BackendError:
            recorder.count(BACKEND_ERRORS, values)
            raise
        finally:
            setattr(_depth, inside, False)
            recorder.time(BACKEND_DURATION, values, time.perf_counter() - started)

    return timed


def _traced(method: Callable[..., Any], kind: str, name: str, tracer: Any) -> Any:
    inside = f"traced_{kind}"
    span_name = f"{kind}.{name}"

    @functools.wraps(method)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, inside, False):
            return method(*args, **kwargs)
        setattr(_depth, inside, True)
        try:
            with span(tracer, span_name):
                return method(*args, **kwargs)
        finally:
            setattr(_depth, inside, False)

    return traced


# --------------------------------------------------------------------------
# Flask
# --------------------------------------------------------------------------


def install_metrics(app: Flask, state: KilnState) -> None:
    """Measure ``app``'s requests on the Flask path, serve ``/__metrics__``
    when Prometheus is on, and count configuration reloads.

    Does nothing when ``state.metrics`` is ``None``. The resource fast path
    (:mod:`kiln.resource.dispatch`) records its requests itself.
    """
    metrics = state.metrics
    if metrics is None:
        return
    from flask import request

    router = state.router
    for route in router.routes if router is not None else ():
        name = route.endpoint.name if route.endpoint is not None else "batch"
        metrics.resources[route.rule] = (name, route.kind)

    @kiln_hook
    def _record_request(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        rule = req.url_rule
        metrics.request(req.environ, req.method, rule.rule if rule else None, response.status_code)
        return response

    # Last of the after-request hooks (they run in reverse): the request
    # summary's hook has timed even a request another hook answered early.
    app.after_request_funcs.setdefault(None, []).insert(0, _record_request)

    state.config.add_listener(metrics.reloaded)
    if metrics.prometheus is not None:
        _install_exposition(app, state, metrics.prometheus)


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _install_exposition(app: Flask, state: KilnState, prometheus: PrometheusRecorder) -> None:
    from flask import request

    def metrics_view() -> Any:
        """The service's metrics, in Prometheus's text format.

        Served to loopback clients, or to those sending the bearer token of
        ``metrics.prometheus_token`` when it is set.
        """
        token = state.config.setting("metrics.prometheus_token")
        if token:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                raise HTTPError(401, ERRORS.MISSING_AUTH_TOKEN, "A valid metrics token is needed.")
        elif request.remote_addr not in _LOOPBACK:
            raise HTTPError(403, ERRORS.FORBIDDEN, "Metrics are served to loopback clients only.")
        body, content_type = prometheus.exposition()
        return app.response_class(body, 200, content_type=content_type)

    app.add_url_rule("/__metrics__", "kiln.metrics", metrics_view, methods=["GET"])
