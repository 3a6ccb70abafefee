"""What the framework measures, and where it sends it: StatsD, Prometheus.

One interface, :class:`Recorder` (counters, timers, gauges and sets of
:class:`Metric` values with labels), is what kiln and applications record
into. Its implementation, :class:`Tally`, adds the values up in the process
and hands them every second to :class:`Exporter` s: :class:`StatsDExporter`
(kiln's own statsd client, :mod:`kiln.stats`, with DogStatsD or Telegraf
tags as an option) and :class:`PrometheusExporter` (``prometheus_client``,
multiprocess-safe under gunicorn, served on ``/__metrics__``). Both are off
by default; ``metrics.statsd_url: udp://host:port`` and ``metrics.prometheus:
true`` switch them on.

:class:`Metrics` is what an app keeps (``KilnState.metrics``, ``None`` when
both are off, so a request pays one attribute check): it turns what kiln
sees -- a request and its route template, a backend call, a retried unit of
work, a configuration reload, delivered events -- into the metrics of
:data:`CATALOGUE`. Labels never carry user data: routes are templates
(``/v1/mushrooms/<id>``), methods outside HTTP's are ``other``, and user
ids are only counted, hashed, in a statsd set.

A metrics backend that is down never fails or slows a request: values are
recorded in the process, statsd datagrams are sent by a thread on a
non-blocking socket and dropped when they cannot go, Prometheus values live
in the process (or in ``mmap`` files).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import logging
import operator
import os
import sys
import threading
import time
import weakref
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from kiln._state import kiln_hook
from kiln.auth.web import REFUSED_BY
from kiln.config import Setting, register_setting
from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import BackendError, ConfigError
from kiln.stats import StatsConnection
from kiln.tracing import span

if TYPE_CHECKING:
    from flask import Flask, Response

    from kiln._state import KilnState
    from kiln.config import Configuration

__all__ = [
    "CATALOGUE",
    "EXPORT_SECONDS",
    "Exporter",
    "Metric",
    "Metrics",
    "PrometheusExporter",
    "Recorder",
    "StatsDExporter",
    "Tally",
    "Window",
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
CONFIG_RELOADS = Metric(
    "config_reloads",
    "counter",
    ("outcome",),
    "Configuration reloads: `success`, `failure` (the new configuration was refused; "
    "the previous one stays).",
)
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
#: How often a process hands what it recorded to its exporters, in seconds
#: (see :class:`Tally`); 0 hands it on at the end of every request (tests).
EXPORT_SECONDS = 1.0


# --------------------------------------------------------------------------
# Recording, adding up, exporting
# --------------------------------------------------------------------------


class Recorder(ABC):
    """Where metric values are recorded. ``values`` are the label values, in
    the metric's label order. Implementations never raise for their
    exporters' trouble and never block."""

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

    def handle(self, metric: Metric, values: tuple[Any, ...] = ()) -> Callable[[Any], None]:
        """What records a value of ``metric`` with label ``values`` (a counter's
        amount, a timer's duration, a gauge's value, a set's value): for code
        that records the same series often, like a backend method's timer, a
        call cheaper than :meth:`count` and the others."""
        if metric.kind == "set":
            return functools.partial(self.unique, metric)
        if metric.kind == "gauge":
            return functools.partial(self.gauge, metric, values)
        if metric.kind == "timer":
            return functools.partial(self.time, metric, values)
        return functools.partial(self.count, metric, values)

    def flush(self) -> None:  # noqa: B027 - nothing held back by default
        """A request ended: hand on what it recorded when that is due (cheap)."""

    def export(self) -> None:  # noqa: B027 - nothing held back by default
        """Hand on everything recorded so far, now."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Hand on what is left and release what the recorder holds."""


Key = tuple[Metric, tuple[Any, ...]]


class Window(NamedTuple):
    """What a process recorded between two exports, by metric and label values:
    counters' totals, every duration of the timers (seconds, in the order
    recorded), gauges' last values, and the distinct values of the sets."""

    counts: dict[Key, float]
    times: dict[Key, list[float]]
    gauges: dict[Key, float]
    sets: dict[Metric, set[str]]


class Exporter(ABC):
    """Where a :class:`Tally` hands what it added up: StatsD, Prometheus."""

    @abstractmethod
    def export(self, window: Window) -> None:
        """Hand on ``window``'s values (never raising for the receiver's trouble)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what the exporter holds."""


class Tally(Recorder):
    """Metric values kept in the process and handed to ``exporters`` every
    ``interval`` seconds (:data:`EXPORT_SECONDS`) by a thread of the
    process.

    Recording a value costs a request a list append (or a set add), after a
    dictionary lookup or none (:meth:`handle`), whatever the exporters, and
    takes no lock: each is one step for the interpreter, and an export takes
    values out of the lists and sets the same way (a copy, then a deletion
    of what was copied), so a value recorded meanwhile waits for the next
    export. An export adds counters up, keeps a gauge's last value, a set's
    distinct values and a timer's every duration (StatsD gets each one,
    Prometheus adds them to its histogram's buckets): what it costs is paid
    once a second for all the requests of that second, off their path -- a
    StatsD line per counter rather than one per request, a write into
    Prometheus's multiprocess files per series rather than several per
    request. ``expanders`` are called with each window before the exporters
    (:class:`Metrics` spreads its requests onto their metrics there).

    With ``interval`` 0, :meth:`flush` exports at the end of every request.
    A forked process (a gunicorn worker) starts with nothing recorded and
    starts its own thread; what is left when the process exits is exported
    then.
    """

    def __init__(self, exporters: Iterable[Exporter], interval: float | None = None) -> None:
        self.exporters = list(exporters)
        self.expanders: list[Callable[[Window], None]] = []
        self.interval = EXPORT_SECONDS if interval is None else interval
        #: The amounts or durations of each counter and timer, the values of
        #: each set, the value of each gauge, since the last export. The lists
        #: and sets live as long as the tally (handles hold them).
        self._series: dict[Key, list[float]] = {}
        self._sets: dict[Metric, set[str]] = {}
        self._gauges: dict[Key, float] = {}
        self._exporting = threading.RLock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        me = weakref.ref(self)
        if hasattr(os, "register_at_fork"):  # pragma: no branch - Windows has no fork
            os.register_at_fork(
                before=lambda: _call(me, "_before_fork"),
                after_in_parent=lambda: _call(me, "_after_fork_in_parent"),
                after_in_child=lambda: _call(me, "_forked"),
            )
        atexit.register(_call, me, "close")

    def _before_fork(self) -> None:
        """No fork in the middle of an export: the locks an exporter takes
        (a socket's, ``prometheus_client``'s) would stay taken in the child."""
        self._exporting.acquire()

    def _after_fork_in_parent(self) -> None:
        self._exporting.release()

    def _forked(self) -> None:
        """In a forked process: nothing recorded (the parent exports what it
        had), no thread, no export under way."""
        for series in self._series.values():
            series.clear()
        for distinct in self._sets.values():
            distinct.clear()
        self._gauges.clear()
        self._exporting = threading.RLock()
        self._thread = None
        self._closed = threading.Event()

    def _series_of(self, metric: Metric, values: tuple[Any, ...]) -> list[float]:
        key = (metric, values)
        series = self._series.get(key)
        if series is None:
            series = self._series.setdefault(key, [])
        return series

    def _set_of(self, metric: Metric) -> set[str]:
        distinct = self._sets.get(metric)
        if distinct is None:
            distinct = self._sets.setdefault(metric, set())
        return distinct

    def count(self, metric: Metric, values: tuple[str, ...], n: float = 1) -> None:
        self._series_of(metric, values).append(n)

    def time(self, metric: Metric, values: tuple[str, ...], seconds: float) -> None:
        self._series_of(metric, values).append(seconds)

    def gauge(self, metric: Metric, values: tuple[str, ...], value: float) -> None:
        self._gauges[(metric, values)] = value

    def unique(self, metric: Metric, value: str) -> None:
        self._set_of(metric).add(value)

    def handle(self, metric: Metric, values: tuple[Any, ...] = ()) -> Callable[[Any], None]:
        if metric.kind == "set":
            return self._set_of(metric).add
        if metric.kind == "gauge":
            return super().handle(metric, values)
        return self._series_of(metric, values).append

    def flush(self) -> None:
        if self._thread is None:
            if self.interval <= 0 or self._closed.is_set():
                self.export()
            else:
                self._start()

    def _start(self) -> None:
        with self._exporting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kiln-metrics", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        closed = self._closed
        while not closed.wait(self.interval):
            self.export()

    def export(self) -> None:
        with self._exporting:  # one export at a time: windows leave in order
            gauges = self._gauges
            window = Window({}, {}, {key: gauges.pop(key) for key in list(gauges)}, {})
            for key, taken in _taken(self._series):
                if key[0].kind == "counter":
                    window.counts[key] = sum(taken)
                else:
                    window.times[key] = taken
            window.sets.update(_taken(self._sets))
            try:
                for expand in self.expanders:
                    expand(window)
            except Exception:  # a bug must stop neither the next exports nor the thread
                logger.exception("Metrics lost a second of values: an expander failed")
                return
            if not any(window):
                return
            for exporter in self.exporters:
                try:
                    exporter.export(window)
                except Exception:
                    logger.exception("The %s lost a second of metrics", type(exporter).__name__)

    def close(self) -> None:
        self._closed.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self.export()
        for exporter in self.exporters:
            exporter.close()


def _taken(collections: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """Each key's list or set of values that is not empty, and takes them out
    of it: a copy, then a deletion of what was copied, each one step for the
    interpreter -- a value another thread adds meanwhile stays for next time."""
    for key, values in list(collections.items()):
        if values:
            taken = values.copy()
            if isinstance(taken, list):
                del values[: len(taken)]
            else:
                values.difference_update(taken)
            yield key, taken


def _call(ref: weakref.ref[Tally], name: str) -> None:
    """Call method ``name`` of the tally ``ref`` refers to, if it still exists."""
    tally = ref()
    if tally is not None:
        getattr(tally, name)()


class StatsDExporter(Exporter):
    """Metrics as statsd lines, sent over UDP to ``url`` (``udp://host:port``).

    Without ``tags``, label values are appended to the name
    (``kiln.resource_actions.mushroom.get.200``); ``tags="dogstatsd"`` sends
    ``kiln.resource_actions:1|c|#resource:mushroom,...`` and ``tags="telegraf"``
    sends ``kiln.resource_actions,resource=mushroom,...:1|c``.

    An export sends a line per counter (its total: ``...:12|c``), gauge
    (its last value) and distinct value of a set, and one per duration of a
    timer (``...:1.204|ms``), in datagrams of up to
    :data:`~kiln.stats.MAX_DATAGRAM` bytes on a non-blocking socket: when
    statsd is down they are dropped.
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
        #: ``(name + ":", tags after the value, timer line template)`` of each
        #: metric and label values seen.
        self._names: dict[tuple[str, tuple[str, ...]], tuple[str, str, str]] = {}

    def _name(self, metric: Metric, values: tuple[str, ...]) -> tuple[str, str, str]:
        """The dotted name (with the ``:`` before the value) and tag suffix of
        ``metric`` with label ``values``, and the ``%`` template of its timer lines."""
        key = (metric.name, values)
        known = self._names.get(key)
        if known is not None:
            return known
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
        name += ":"
        line = name.replace("%", "%%") + "%.3f|ms" + suffix.replace("%", "%%") + "\n"
        rv = self._names[key] = (name, suffix, line)
        return rv

    def export(self, window: Window) -> None:
        parts: list[str] = []
        for (metric, values), total in window.counts.items():
            name, suffix, _ = self._name(metric, values)
            parts.append(f"{name}{_number(total)}|c{suffix}\n")
        for (metric, values), durations in window.times.items():
            # One ``%`` over all the durations in milliseconds: no Python step per line.
            line = self._name(metric, values)[2]
            parts.append(line * len(durations) % tuple(map(_MILLISECONDS, durations)))
        for (metric, values), value in window.gauges.items():
            name, suffix, _ = self._name(metric, values)
            # statsd reads a leading sign as a delta: a negative gauge goes through zero.
            if value < 0:
                parts.append(f"{name}0|g{suffix}\n")
            parts.append(f"{name}{_number(value)}|g{suffix}\n")
        for metric, distinct in window.sets.items():
            name, suffix, _ = self._name(metric, ())
            parts.extend([f"{name}{value}|s{suffix}\n" for value in distinct])
        self.connection.send("".join(parts))  # split into datagrams

    def close(self) -> None:
        self.connection.reset()


#: Seconds to milliseconds.
_MILLISECONDS = functools.partial(operator.mul, 1000.0)


def _number(value: float) -> str:
    """``value`` as statsd reads it: ``12``, ``-0.25``; never an exponent."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _segment(value: str) -> str:
    """``value`` as one dotted-name segment: ``/v1/mushrooms/<id>`` -> ``v1_mushrooms_id``."""
    text = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in value.replace("<", ""))
    return text.replace(">", "").strip("_") or "_"


def _tag(value: str) -> str:
    # Tag separators of either dialect never reach the wire.
    return "".join("_" if ch in ",:|=#@ \n\r" else ch for ch in value)


class PrometheusExporter(Exporter):
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
        #: and locks on every call).
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        #: What adds a total to each counter child, durations to each histogram
        #: child: see :func:`_counter_adder` and :func:`_histogram_adder`.
        self._adders: dict[tuple[str, tuple[str, ...]], Callable[[Any], None]] = {}
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

    def _adder(self, metric: Metric, values: tuple[str, ...]) -> Callable[[Any], None]:
        key = (metric.name, values)
        add = self._adders.get(key)
        if add is None:
            child = self._child(metric, values)
            make = _histogram_adder if metric.kind == "timer" else _counter_adder
            add = self._adders[key] = make(child)
        return add

    def export(self, window: Window) -> None:
        for (metric, values), total in window.counts.items():
            self._adder(metric, values)(total)
        for (metric, values), durations in window.times.items():
            self._adder(metric, values)(durations)
        for (metric, values), value in window.gauges.items():
            self._child(metric, values).set(value)
        # Sets have no Prometheus counterpart: a set of ids would grow without bound.

    def exposition(self) -> tuple[bytes, str]:
        """The text of every metric (all workers' in multiprocess mode), and its type."""
        client = self._client
        registry = self.registry
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            registry = client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return client.generate_latest(registry), client.CONTENT_TYPE_LATEST


def _counter_adder(child: Any) -> Callable[[float], None]:
    """What adds a total to a counter ``child``: its value's own ``inc``
    (``Counter.inc`` checks the amount on every call), else ``inc``."""
    value = getattr(child, "_value", None)
    return value.inc if value is not None else child.inc  # type: ignore[no-any-return]


def _histogram_adder(child: Any) -> Callable[[list[float]], None]:
    """What adds durations to a histogram ``child``: each bucket's count and
    the sum, once each (``Histogram.observe`` writes the sum and a bucket
    per duration, and each write of a multiprocess value locks, checks the
    pid and writes its ``mmap`` file). Without the values
    ``prometheus_client`` keeps today (``_sum``, ``_buckets``,
    ``_upper_bounds``), ``observe`` is called for each duration."""
    total = getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    if total is None or bounds is None or buckets is None:
        observe = child.observe

        def observe_each(durations: list[float]) -> None:
            for seconds in durations:
                observe(seconds)

        return observe_each
    add_to_sum = total.inc
    bounds = tuple(bounds)  # sorted, +Inf last: every duration has a bucket
    bucket_incs = tuple(bucket.inc for bucket in buckets)

    def add(durations: list[float]) -> None:
        counts = [0] * len(bounds)
        for seconds in durations:
            counts[bisect_left(bounds, seconds)] += 1
        add_to_sum(sum(durations))
        for inc, count in zip(bucket_incs, counts, strict=True):
            if count:
                inc(count)

    return add


# --------------------------------------------------------------------------
# What the framework measures
# --------------------------------------------------------------------------


#: A request or batch sub-request answered, as :meth:`Metrics.request` records
#: it: one value under every label it is counted by. Each export spreads it
#: onto :data:`REQUEST_DURATION` (or :data:`SUBREQUESTS`),
#: :data:`AUTHENTICATIONS` and :data:`RESOURCE_ACTIONS`; never exported itself.
ANSWERED = Metric(
    "answered",
    "timer",
    ("subrequest", "method", "route", "status", "user_policy", "refused_by"),
    "Requests answered (kiln's own record; spread onto the request metrics).",
)
#: The ids of the users who sent requests, as :meth:`Metrics.request` records
#: them: each export hashes them into :data:`UNIQUE_USERS`; never exported itself.
USER_IDS = Metric("user_ids", "set", (), "Authenticated users (kiln's own record; hashed).")


class Metrics:
    """An app's metrics: what kiln observes, turned into :data:`CATALOGUE`'s values.

    A request costs one append to a list, and one add to a set when a user
    sent it: its method, route, status and authentication are the key of
    the list (:data:`ANSWERED`), and each export of the ``recorder`` spreads
    the durations onto the request metrics (:meth:`_spread`).
    """

    def __init__(
        self,
        recorder: Tally,
        prometheus: PrometheusExporter | None = None,
        *,
        salt: str = "kiln",
    ) -> None:
        self.recorder = recorder
        recorder.expanders.append(self._spread)
        #: The exporter ``/__metrics__`` serves, when Prometheus is on.
        self.prometheus = prometheus
        #: ``route template -> (resource name, route kind)`` of resource routes.
        self.resources: dict[str, tuple[str, str]] = {}
        self._salt = salt.encode()[:64]
        #: What records a request, by its :data:`ANSWERED` label values.
        self._answered: dict[tuple[Any, ...], Callable[[float], None]] = {}
        self._user = recorder.handle(USER_IDS)

    def request(
        self, environ: Mapping[str, Any], method: str, route: str | None, status: int
    ) -> None:
        """Record a request (or batch sub-request) answered with ``status``.

        ``route`` is the template the request matched (``None``: none).
        """
        identity = environ.get("kiln.identity")
        subrequest = "kiln.subrequest" in environ
        key = (
            subrequest,
            method if method in _METHODS else "other",  # a client cannot make series up
            route,
            status,
            identity.policy if identity is not None else None,
            environ.get(REFUSED_BY),
        )
        record = self._answered.get(key)
        if record is None:
            record = self._answered[key] = self.recorder.handle(ANSWERED, key)
        if subrequest:
            record(0.0)  # counted, not timed
            return
        record(time.perf_counter() - environ["kiln.start"])
        if identity is not None:
            self._user(identity.prefixed_id)
        self.recorder.flush()

    def _spread(self, window: Window) -> None:
        """Turn ``window``'s requests (:data:`ANSWERED`) into the metrics they
        count in, and its user ids into their hashes (an expander of the tally)."""
        times, counts = window.times, window.counts
        for key in [key for key in times if key[0] is ANSWERED]:
            durations = times.pop(key)
            subrequest, method, route, status, user_policy, refused_by = key[1]
            template = route or UNMATCHED
            code = str(status)
            values = (method, template, code)
            if subrequest:
                _add(counts, (SUBREQUESTS, values), len(durations))
            else:
                times.setdefault((REQUEST_DURATION, values), []).extend(durations)
                if user_policy is not None:
                    outcome = (str(user_policy), "success")
                elif status == 401:
                    outcome = (str(refused_by or "none"), "failure")
                else:
                    outcome = ("none", "anonymous")
                _add(counts, (AUTHENTICATIONS, outcome), len(durations))
            resource = self.resources.get(template)
            if resource is not None:
                name, kind = resource
                action = "batch" if kind == "batch" else _ACTIONS.get((kind, method), "other")
                _add(counts, (RESOURCE_ACTIONS, (name, action, code)), len(durations))
        users = window.sets.pop(USER_IDS, None)
        if users:
            salt = self._salt
            window.sets.setdefault(UNIQUE_USERS, set()).update(
                hashlib.blake2b(str(user).encode(), key=salt, digest_size=12).hexdigest()
                for user in users
            )

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
        self.recorder.count(CONFIG_RELOADS, ("success",))
        self.recorder.flush()

    def reload_failed(self, config: Configuration) -> None:
        """A reload of the configuration failed (a failure listener)."""
        self.recorder.count(CONFIG_RELOADS, ("failure",))
        self.recorder.flush()

    def close(self, config: Configuration) -> None:
        """Stop counting ``config``'s reloads; export what is left, release the exporters."""
        config.remove_listener(self.reloaded)
        config.remove_listener(self.reload_failed)
        self.recorder.close()


def _add(counts: dict[Key, float], key: Key, amount: float) -> None:
    counts[key] = counts.get(key, 0) + amount


def build_metrics(config: Configuration) -> Metrics | None:
    """The metrics ``config`` asks for, or ``None`` when they are off.

    :raises ConfigError: ``metrics.statsd_url`` is not a ``udp://host:port`` address.
    """
    exporters: list[Exporter] = []
    url = config.setting("metrics.statsd_url")
    if url:
        exporters.append(
            StatsDExporter(
                url, config.setting("metrics.statsd_prefix"), config.setting("metrics.statsd_tags")
            )
        )
    prometheus = None
    if config.setting("metrics.prometheus"):
        prometheus = PrometheusExporter()
        exporters.append(prometheus)
    if not exporters:
        return None
    return Metrics(Tally(exporters), prometheus, salt=str(config.setting("project.name")))


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
    record = recorder.handle(BACKEND_DURATION, values)
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
            record(time.perf_counter() - started)

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
    state.config.add_listener(metrics.reload_failed, failures=True)
    if metrics.prometheus is not None:
        _install_exposition(app, state, metrics.recorder, metrics.prometheus)


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _install_exposition(
    app: Flask, state: KilnState, recorder: Recorder, prometheus: PrometheusExporter
) -> None:
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
        recorder.export()  # this process's values of the last second too
        body, content_type = prometheus.exposition()
        return app.response_class(body, 200, content_type=content_type)

    app.add_url_rule("/__metrics__", "kiln.metrics", metrics_view, methods=["GET"])
