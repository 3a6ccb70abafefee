"""Logging setup, a JSON formatter, remote handlers and the request summary.

Defaults: WARNING and above to stderr, plus one ``request.summary`` line per
request at INFO. A ``logging`` key holding a :func:`logging.config.dictConfig`
mapping replaces the defaults; ``debug.logging`` lowers kiln's loggers to
DEBUG; ``logging_format: json`` switches the default handler to
:class:`JSONFormatter` (mozlog fields).

:class:`UDPHandler` and :class:`TCPHandler` send logstash ``json_event``
lines to a remote collector (Clay's ``clay.logger`` handlers, fixed): they
never raise into application code, drop and count records they cannot
queue, back off with a cap, verify TLS hostnames and bound datagram sizes.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import logging.config
import os
import queue
import re
import selectors
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson
import werkzeug.urls  # noqa: F401 -- registers the "werkzeug.url_quote" codec error handler

from kiln._state import kiln_hook
from kiln.exceptions import ConfigError

if TYPE_CHECKING:
    from flask import Flask, Response

    from kiln.config import Configuration

__all__ = [
    "REQUEST_ID_HEADER",
    "JSONFormatter",
    "TCPHandler",
    "TextFormatter",
    "UDPHandler",
    "configure",
    "current_request_id",
    "install_request_summary",
    "log_summary",
    "logstash_event",
    "printable",
    "start_timer",
    "summary_logged",
]

SUMMARY_LOGGER = "request.summary"
#: The header carrying a request's id, from the client and back to it.
REQUEST_ID_HEADER = "X-Request-Id"
#: A well-formed ``X-Request-Id``: short, and safe in headers, logs and label values.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
_current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kiln_request_id", default=None
)
SUBREQUEST_SUMMARY_LOGGER = "subrequest.summary"
#: Attribute marking the handlers :func:`configure` owns (and replaces).
_KILN_HANDLER = "_kiln_default_handler"

#: syslog severities of the mozlog format, from the most severe level down.
_SYSLOG_SEVERITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


# --------------------------------------------------------------------------
# Formatters
# --------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _dumps(value: Any) -> bytes:
    """``value`` as compact JSON; text orjson refuses (lone surrogates) is escaped."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        # json accepts lone surrogates; turn them into visible ``\\udcxx`` text.
        plain = json.loads(json.dumps(value, default=str))
        return orjson.dumps(_scrub(plain))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def printable(text: str) -> str:
    """``text`` with control characters escaped, so one record stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _plain(value: Any) -> str:
    if isinstance(value, str) and value and value.isprintable() and " " not in value:
        return value
    return _dumps(value).decode()


class TextFormatter(logging.Formatter):
    """``time name LEVEL message key=value...``, one line per record.

    The ``fields`` extra (a mapping) is appended as ``key=value`` pairs;
    values with spaces or control characters are JSON-quoted, so a field
    never splits the line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_plain(value)}" for key, value in fields.items())
        return line


def _severity(levelno: int) -> int:
    for level, severity in _SYSLOG_SEVERITY:
        if levelno >= level:
            return severity
    return 7


class JSONFormatter(logging.Formatter):
    """One JSON object per line in Mozilla's mozlog shape.

    ``{"Timestamp": ns, "Logger": project, "Type": logger name, "Severity":
    syslog level, "Pid", "Hostname", "EnvVersion": "2.0", "Fields": {...}}``;
    ``Fields`` holds ``msg``, the record's ``fields`` extra and, on errors,
    ``error`` and ``traceback``. ``Hostname`` is ``$HOSTNAME`` when set.

    .. versionadded:: 0.1
    """

    def __init__(self, logger_name: str = "kiln") -> None:
        super().__init__()
        self.logger_name = logger_name
        self.hostname = os.environ.get("HOSTNAME") or socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        fields = {"msg": record.getMessage(), **_fields(record)}
        if record.exc_info and record.exc_info[0] is not None:
            fields["error"] = repr(record.exc_info[1])
            fields["traceback"] = self.formatException(record.exc_info)
        event = {
            "Timestamp": int(record.created * 1_000_000_000),
            "Logger": self.logger_name,
            "Type": record.name,
            "Severity": _severity(record.levelno),
            "Pid": record.process,
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Fields": fields,
        }
        return _dumps(event).decode()


def logstash_event(record: logging.LogRecord, hostname: str | None = None) -> dict[str, Any]:
    """The logstash ``json_event`` v0 document of ``record`` (Clay's wire format).

    Called in the thread that logs, so the traceback is the record's own.
    ``@timestamp`` is UTC with a ``Z`` (Clay's had no zone).
    """
    fields: dict[str, Any] = {
        "level": record.levelname,
        "filename": record.pathname,
        "lineno": record.lineno,
        "method": record.funcName,
        **_fields(record),
    }
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = repr(record.exc_info[1])
        fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
    created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return {
        "@source_host": (hostname or socket.gethostname()).split(".")[0],
        "@timestamp": created.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "@tags": [record.name],
        "@message": record.getMessage(),
        "@fields": fields,
    }


# --------------------------------------------------------------------------
# Remote handlers
# --------------------------------------------------------------------------

#: The smallest datagram bound :class:`UDPHandler` accepts: room for the
#: fixed fields of a truncated event.
MIN_DATAGRAM_BYTES = 512
_ELLIPSIS = "..."


def _encoded_size(text: str) -> int:
    return len(orjson.dumps(text)) - 2


def _fit(text: str, budget: int) -> str:
    """The longest prefix of ``text`` whose JSON encoding takes ``budget`` bytes at most."""
    # A character takes at least one byte, so the answer is at most ``budget`` long.
    low, high = 0, min(len(text), max(budget, 0))
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


class UDPHandler(logging.Handler):
    """Send each record as one logstash JSON datagram to ``host:port``.

    Datagrams are bounded by ``max_bytes`` (at least 512): the longest texts
    (message, traceback, exception, other string fields) are cut and end
    with ``...``, and ``@fields.truncated`` is ``true``; the datagram is
    always valid UTF-8 JSON. ``host`` is resolved on the first send and after
    every failure. A record that cannot be sent is dropped and counted in
    :attr:`dropped`; ``emit`` never raises into the caller.

    Settings (as dictConfig keys): ``host``, ``port``, ``max_bytes``.
    """

    def __init__(self, host: str, port: int, max_bytes: int = 8192) -> None:
        super().__init__()
        if max_bytes < MIN_DATAGRAM_BYTES:
            raise ValueError(
                f"UDPHandler max_bytes must be at least {MIN_DATAGRAM_BYTES}, got {max_bytes}."
            )
        self.host = host
        self.port = int(port)
        self.max_bytes = max_bytes
        #: Records not sent (encoding or socket failure).
        self.dropped = 0
        self.hostname = socket.gethostname()
        self._socket: socket.socket | None = None
        self._target: Any = None
        self._socket_lock = threading.Lock()

    def encode(self, record: logging.LogRecord) -> bytes:
        """The datagram for ``record``: at most :attr:`max_bytes`, newline-terminated."""
        data = _dumps(logstash_event(record, self.hostname)) + b"\n"
        if len(data) <= self.max_bytes:
            return data
        # From here on, work on plain JSON values with valid text only.
        event: dict[str, Any] = orjson.loads(data)
        fields: dict[str, Any] = event["@fields"]
        fields["truncated"] = True
        places: list[tuple[Any, Any]] = [(event, "@message"), (event["@tags"], 0)]
        places += [(fields, key) for key, value in fields.items() if isinstance(value, str)]
        texts = [container[key] for container, key in places]
        for container, key in places:
            container[key] = ""
        available = self.max_bytes - len(_dumps(event)) - 1
        if available >= 0:
            # Share the room fairly, smallest texts first: short fields stay
            # whole, the long ones (message, traceback) get equal parts.
            order = sorted(range(len(places)), key=lambda index: _encoded_size(texts[index]))
            for rank, index in enumerate(order):
                text, (container, key) = texts[index], places[index]
                share = available // (len(order) - rank)
                size = _encoded_size(text)
                if size <= share:
                    container[key] = text
                elif share >= len(_ELLIPSIS):
                    container[key] = _fit(text, share - len(_ELLIPSIS)) + _ELLIPSIS
                available -= _encoded_size(container[key])
            return _dumps(event) + b"\n"
        return self._minimal(orjson.loads(data))

    def _minimal(self, event: dict[str, Any]) -> bytes:
        # What is too big is not a text we may cut (keys, numbers, lists):
        # keep only the fixed fields and as much of the message as fits.
        minimal: dict[str, Any] = {
            "@source_host": _fit(event["@source_host"], 64),
            "@timestamp": event["@timestamp"],
            "@tags": [_fit(str(tag), 64) for tag in event["@tags"][:1]],
            "@message": "",
            "@fields": {"level": _fit(str(event["@fields"].get("level")), 64), "truncated": True},
        }
        budget = self.max_bytes - len(_dumps(minimal)) - 1 - len(_ELLIPSIS)
        minimal["@message"] = _fit(event["@message"], budget) + _ELLIPSIS
        return _dumps(minimal) + b"\n"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.encode(record)
            with self._socket_lock:
                if self._socket is None:
                    family, kind, proto, _, target = socket.getaddrinfo(
                        self.host, self.port, type=socket.SOCK_DGRAM
                    )[0]
                    self._socket = socket.socket(family, kind, proto)
                    self._target = target
                self._socket.sendto(data, self._target)
        except Exception:
            # Logging must not break the application: drop, count, and
            # resolve the address again next time.
            with self._socket_lock:
                self.dropped += 1
                self._reset()

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def close(self) -> None:
        with self._socket_lock:
            self._reset()
        super().close()


class TCPHandler(logging.Handler):
    """Send logstash JSON lines over TCP (optionally TLS) from a background thread.

    ``emit`` formats the record (in the caller's thread, so the traceback is
    the record's own) and queues it; when the queue is full the record is
    dropped and counted in :attr:`dropped` — logging never blocks or raises
    in application code. While the collector is down the sender retries the
    same record (order is kept) with exponential backoff from
    ``initial_backoff`` up to ``max_backoff`` seconds. With ``ssl_ca_file``
    (or ``tls=True`` for the system store) the connection is TLS with
    certificate and hostname verification. ``timeout`` bounds connecting,
    sending, :meth:`flush` and :meth:`close`.

    Settings (as dictConfig keys): ``host``, ``port``, ``ssl_ca_file``,
    ``tls``, ``queue_size``, ``timeout``, ``initial_backoff``,
    ``max_backoff``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl_ca_file: str | None = None,
        *,
        tls: bool = False,
        queue_size: int = 5000,
        timeout: float = 5.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__()
        self.address = (host, int(port))
        self.timeout = timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        #: Records not delivered (queue full, unformattable, closing while down).
        self.dropped = 0
        #: Records written to a connection.
        self.sent = 0
        self.hostname = socket.gethostname()
        self._context: ssl.SSLContext | None = None
        if ssl_ca_file or tls:
            # Certificate and hostname verification, TLS 1.2+ (Clay: TLSv1, no hostname check).
            self._context = ssl.create_default_context(cafile=ssl_ca_file)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._count_lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiln-tcp-log", daemon=True)
        self._thread.start()

    def _drop(self, count: int = 1) -> None:
        with self._count_lock:
            self.dropped += count

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed:
            self._drop()
            return
        try:
            self._queue.put_nowait(_dumps(logstash_event(record, self.hostname)) + b"\n")
        except Exception:  # queue.Full, or a record that cannot be formatted
            self._drop()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        if self._context is None:
            return sock
        try:
            return self._context.wrap_socket(sock, server_hostname=self.address[0])
        except BaseException:
            sock.close()
            raise

    def _run(self) -> None:
        sock: socket.socket | None = None
        backoff = self.initial_backoff
        while (item := self._queue.get()) is not None:
            while True:
                try:
                    if sock is not None and _peer_closed(sock):
                        sock.close()
                        sock = None
                    if sock is None:
                        sock = self._connect()
                    sock.sendall(item)
                except Exception:
                    if sock is not None:
                        sock.close()
                        sock = None
                    if self._stopping.wait(backoff):
                        # Closing while the collector is down: give up on the rest.
                        self._give_up()
                        return
                    backoff = min(backoff * 2, self.max_backoff)
                else:
                    with self._count_lock:
                        self.sent += 1
                    backoff = self.initial_backoff
                    break
            self._queue.task_done()
        self._queue.task_done()
        if sock is not None:
            sock.close()

    def _give_up(self) -> None:
        # The record in hand, then everything still queued (but the sentinel).
        dropped = 1
        self._queue.task_done()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += item is not None
            self._queue.task_done()
        self._drop(dropped)

    def flush(self) -> None:
        """Wait (at most ``timeout`` seconds) for queued records to be handled.

        Does nothing once closed (``logging.shutdown`` flushes closed handlers).
        """
        if not self._closed:
            self.drain(self.timeout)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record was sent or dropped, at most ``timeout`` seconds.

        Returns whether the queue drained in time.
        """
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(
                lambda: not self._queue.unfinished_tasks, timeout
            )

    def close(self) -> None:
        """Stop the sender, waiting at most ``timeout`` seconds.

        What is queued is still sent while the collector answers; at the
        first failure the rest is dropped (and counted). Records logged
        after ``close`` are dropped.
        """
        if not self._closed:
            self._closed = True
            self._stopping.set()
            # Full: the sender is stuck on a slow collector; it is a daemon thread.
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=self.timeout)
            self._thread.join(self.timeout)
        super().close()


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the collector closed the connection (it never sends anything)."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))


# --------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------

#: Whether the last :func:`configure` lowered the ``kiln`` logger to DEBUG.
_debug_level_set = False


def configure(config: Configuration) -> None:
    """Apply the logging keys of ``config`` to this process.

    - no ``logging`` key: WARNING and above to stderr through one kiln-owned
      handler (text, or mozlog JSON with ``logging_format: json``), and the
      ``request.summary`` logger at INFO;
    - ``logging``: a :func:`logging.config.dictConfig` mapping, applied
      instead (``version`` defaults to 1 and ``disable_existing_loggers`` to
      ``False``);
    - ``debug.logging: true``: the ``kiln`` logger at DEBUG.

    Idempotent: kiln's handlers are replaced, never duplicated, and handlers
    added by others (pytest's, an embedding app's) are left alone (a
    dictConfig that configures ``root`` replaces them, as dictConfig does).
    Called by :func:`kiln.create_app` and after every config reload.

    :raises ConfigError: the ``logging`` mapping is rejected by dictConfig;
        the default handler is installed first, so logs are not lost.
    """
    global _debug_level_set
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _KILN_HANDLER, False):
            root.removeHandler(handler)
            handler.close()
    if _debug_level_set:
        # Undo only what kiln did, so a level set by a dictConfig survives.
        logging.getLogger("kiln").setLevel(logging.NOTSET)
        _debug_level_set = False
    dict_config = config.setting("logging")
    if dict_config:
        settings = dict(dict_config)
        settings.setdefault("version", 1)
        settings.setdefault("disable_existing_loggers", False)
        try:
            logging.config.dictConfig(settings)
        except Exception as exc:
            _install_default(config)
            raise ConfigError(
                f"The 'logging' setting is not a valid dictConfig mapping: {exc}. "
                "See https://docs.python.org/3/library/logging.config.html#dictionary-schema."
            ) from exc
    else:
        _install_default(config)
    if config.setting("debug.logging"):
        logging.getLogger("kiln").setLevel(logging.DEBUG)
        _debug_level_set = True


def _install_default(config: Configuration) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _KILN_HANDLER, True)
    if config.setting("logging_format") == "json":
        handler.setFormatter(JSONFormatter(str(config.setting("project.name"))))
    else:
        handler.setFormatter(TextFormatter())
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    # One line per request; batch sub-requests' lines (``subrequest.summary``)
    # are opt-in: set that logger to INFO in a ``logging`` dictConfig.
    summary = logging.getLogger(SUMMARY_LOGGER)
    if summary.level == logging.NOTSET:
        summary.setLevel(logging.INFO)


def install_request_summary(app: Flask, config: Configuration) -> None:
    """Log one ``request.summary`` line per request of ``app`` (:func:`log_summary`)."""
    from flask import request

    @kiln_hook
    def _start_timer() -> None:
        # In the WSGI environ, not ``g``: batch sub-requests share the batch's ``g``.
        start_timer(request.environ)

    # First of all before-request hooks: a hook that answers early (a
    # redirect, an error) must still be timed.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)

    @app.after_request
    @kiln_hook
    def _log_summary(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        environ = req.environ
        if "kiln.start" not in environ:  # another hook was put before ours and answered
            start_timer(environ)
        log_summary(config, environ, req.method, req.path, response.status_code)
        if not environ.get("kiln.subrequest"):
            response.headers[REQUEST_ID_HEADER] = environ["kiln.request_id"]
        return response


def start_timer(environ: dict[str, Any]) -> None:
    """Note when the request of ``environ`` started (for :func:`log_summary`), and its id.

    The id is the client's ``X-Request-Id`` when it is well-formed (1 to 128
    letters, digits or ``-_.:+/=``), else a new random one; a batch's
    sub-requests keep the batch's. It is kept as ``environ["kiln.request_id"]``
    and as :func:`current_request_id`.
    """
    environ["kiln.start"] = time.perf_counter()
    environ["kiln.start_time"] = time.time()
    rid = environ.get("kiln.request_id")
    if rid is None:
        given = environ.get("HTTP_X_REQUEST_ID")
        rid = given if given and _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
        environ["kiln.request_id"] = rid
    _current_request_id.set(rid)


def current_request_id() -> str | None:
    """The id of the request this thread (or task) serves, or last served."""
    return _current_request_id.get()


def summary_logged(*, subrequest: bool = False) -> bool:
    """Whether a request's (or batch sub-request's) summary line would be written."""
    return (_SUBREQUEST_SUMMARY if subrequest else _SUMMARY).isEnabledFor(logging.INFO)


def log_summary(
    config: Configuration, environ: dict[str, Any], method: str, path: str, status: int
) -> None:
    """Log the ``request.summary`` line of a request, with Cliquet's fields.

    The message reads ``"GET /v1/path?query" 200 (3.1 ms)`` with control
    characters escaped (a CR/LF in a URL never splits a log line); the
    record's ``fields`` extra holds ``agent``, ``path``, ``method``,
    ``querystring``, ``lang``, ``uid``, ``authn_type``, ``errno``, ``code``,
    ``time`` (ISO start time) and ``t`` (milliseconds), plus whatever views
    put in ``environ["kiln.summary_fields"]``. Batch sub-requests log
    ``subrequest.summary`` lines. ``request.summary: false`` turns both off.
    Nothing is built when the line would not be written.
    """
    target = _SUBREQUEST_SUMMARY if environ.get("kiln.subrequest") else _SUMMARY
    if not target.isEnabledFor(logging.INFO) or not config.setting("request.summary"):
        return
    elapsed_ms = round((time.perf_counter() - environ["kiln.start"]) * 1000, 2)
    query_string = environ.get("QUERY_STRING", "")
    fields = {
        "agent": environ.get("HTTP_USER_AGENT"),
        "path": path,
        "method": method,
        "querystring": _first_values(query_string) if query_string else {},
        "lang": environ.get("HTTP_ACCEPT_LANGUAGE"),
        "uid": None,
        "authn_type": None,
        "errno": environ.get("kiln.errno"),
        "code": status,
        "time": datetime.datetime.fromtimestamp(environ["kiln.start_time"], datetime.UTC).isoformat(
            timespec="milliseconds"
        ),
        "t": elapsed_ms,
        "rid": environ.get("kiln.request_id"),
    }
    fields.update(environ.get("kiln.summary_fields", {}))
    query = f"?{query_string}" if query_string else ""
    target.info(
        '"%s %s%s" %s (%s ms)',
        printable(method),
        printable(path),
        printable(query),
        status,
        elapsed_ms,
        extra={"fields": fields},
    )


def _first_values(query_string: str) -> dict[str, str]:
    """The first value of each query parameter, decoded as werkzeug decodes them."""
    first: dict[str, str] = {}
    pairs = urllib.parse.parse_qsl(
        query_string.encode("latin-1").decode(), keep_blank_values=True, errors="werkzeug.url_quote"
    )
    for key, value in pairs:
        first.setdefault(key, value)
    return first


_SUMMARY = logging.getLogger(SUMMARY_LOGGER)
_SUBREQUEST_SUMMARY = logging.getLogger(SUBREQUEST_SUMMARY_LOGGER)
