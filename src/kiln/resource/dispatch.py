"""Resource requests straight from WSGI: kiln's fast path.

A resource request does not need Flask's request machinery: kiln knows its
routes, its hooks and its error envelope. :class:`ResourceDispatcher` wraps
the app's ``wsgi_app``: a request whose path and method match a mounted
resource (or ``POST /v<N>/batch``) is routed on the WSGI environ straight
into the sans-IO core (:mod:`kiln.resource.endpoints`); every other request
goes to Flask, unchanged.

On that path kiln does, in Flask's order, what its own hooks do on the Flask
path -- the request timer, the end-of-service 410, authentication, the JSON
error envelope, then the ``WWW-Authenticate``/``no-store`` headers, the
request summary line, CORS, the end-of-service ``Alert``, ``Backoff``,
``Cache-Control`` and ``Vary`` -- and the answers are the same, byte for
byte (``tests/resource/test_dispatch.py`` compares both paths). A Flask
app context is pushed, so ``current_app``, ``g`` and ``kiln.config.get``
work in resource hooks (``process_record``, authorizers, event listeners);
``flask.request`` does not.

Flask's own hooks cannot run there. So resource requests take the Flask
path whenever the app has request hooks, error handlers, URL processors or
request signals that kiln did not install (a views module's
``@app.before_request``, a Flask extension), and a route that another rule
could shadow (a Clay route like ``/v1/mushrooms/special`` beside
``/v1/mushrooms/<id>``) is always left to Flask's routing. Nothing
registered on the app is ever skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from flask import Flask, signals
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import HTTP_STATUS_CODES, parse_accept_header, parse_options_header
from werkzeug.routing import Rule

from kiln._headers import common_headers
from kiln._limits import request_limit_error
from kiln.auth.web import principals_of
from kiln.cors import cors_headers
from kiln.eos import hard_eol_error, soft_eol_header
from kiln.errors import ERRORS, HTTPError, backend_error, unexpected_error
from kiln.exceptions import BackendError
from kiln.logging import REQUEST_ID_HEADER, log_summary, start_timer
from kiln.resource.endpoints import Endpoint, Reply, Request, seen_timestamp
from kiln.resource.events import ResourceChanged, before_commit_of, deliver
from kiln.resource.unit_of_work import UnitOfWork, current_unit, run
from kiln.tracing import span
from kiln.views import url_root

if TYPE_CHECKING:
    from kiln._state import KilnState
    from kiln.auth.web import Memo
    from kiln.storage import StorageBase

__all__ = [
    "RequestHeaders",
    "ResourceDispatcher",
    "ResourceRouter",
    "Route",
    "check_accept",
    "error_reply",
    "foreign_hooks",
    "read_body",
    "request_of",
    "run_unit",
    "serve",
    "write",
]

logger = logging.getLogger("kiln.resource")

T = TypeVar("T")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Serves a batch on the fast path: ``(dispatcher, request, environ, memo) -> reply``.
BatchHandler = Callable[["ResourceDispatcher", Request, dict[str, Any], "Memo"], Reply]

#: Methods the fast path serves; OPTIONS (CORS preflights), and any method a
#: route does not allow (405 with ``Allow``), are left to Flask.
FAST_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STATUS_LINES: dict[int, str] = {}
_REQUEST_SIGNALS = (
    signals.request_started,
    signals.request_finished,
    signals.got_request_exception,
)
_JSON = "application/json"


@dataclass(frozen=True)
class Route:
    """One route of the fast path: a resource endpoint, or the batch.

    ``segments`` is the path split on ``/``, with ``None`` where a path
    variable goes; ``names`` the variables' names, in order.
    """

    endpoint: Endpoint | None
    kind: str
    methods: frozenset[str]
    segments: tuple[str | None, ...]
    names: tuple[str, ...]
    rule: str
    #: The batch endpoint's handler (``kind == "batch"``).
    batch: BatchHandler | None = None

    @classmethod
    def of(
        cls,
        rule: str,
        endpoint: Endpoint | None,
        kind: str,
        methods: Iterable[str],
        batch: BatchHandler | None = None,
    ) -> Route:
        segments: list[str | None] = []
        names: list[str] = []
        for part in rule.split("/"):
            if part.startswith("<") and part.endswith(">"):
                segments.append(None)
                names.append(part[1:-1].rpartition(":")[2])
            else:
                segments.append(part)
        allowed = set(methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        return cls(endpoint, kind, frozenset(allowed), tuple(segments), tuple(names), rule, batch)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        values = []
        for part, expected in zip(parts, self.segments, strict=True):
            if expected is None:
                if not part:
                    return None
                values.append(part)
            elif part != expected:
                return None
        return dict(zip(self.names, values, strict=True))

    def overlaps(self, rule: Rule) -> bool:
        """Whether Flask's ``rule`` could take a path this route matches."""
        other = rule.rule.split("/")
        for index, part in enumerate(other):
            if index >= len(self.segments):
                return False
            mine = self.segments[index]
            if part.startswith("<path:"):
                # Takes this segment and every one after it.
                return True
            if not (mine is None or "<" in part or part == mine):
                return False
        return len(other) == len(self.segments)


#: WSGI keys of the header fields that have no ``HTTP_`` prefix.
_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})


class RequestHeaders(Mapping[str, str]):
    """A WSGI environ's header fields, looked up by name whatever its case:
    werkzeug's ``EnvironHeaders`` answers, in one step per lookup (a
    request looks several up)."""

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, default: Any = None) -> Any:
        key = name.upper().replace("-", "_")
        value = self.environ.get(key if key in _UNPREFIXED else "HTTP_" + key)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        value: str | None = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        for key, value in self.environ.items():
            if key.startswith("HTTP_") and key[5:] not in _UNPREFIXED:
                yield key[5:].replace("_", "-").title()
            elif key in _UNPREFIXED and value:
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ResourceRouter:
    """The fast path's routes, by number of path segments."""

    def __init__(self, state: KilnState) -> None:
        self.state = state
        self.prefix = state.api_prefix
        self.routes: list[Route] = []
        self._by_length: dict[int, list[Route]] = {}
        #: ``(rules known, routes left to Flask)``, computed for a url_map size.
        self._shadowed: tuple[int, frozenset[Route]] = (-1, frozenset())
        #: The routes left to Flask and whether the app has Flask hooks of its
        #: own, once neither can change (Flask served a request: no rule or
        #: hook may be added any more).
        self._settled: tuple[frozenset[Route], bool] | None = None

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self._by_length.setdefault(len(route.segments), []).append(route)

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route of ``path`` (WSGI-decoded), and its variables."""
        parts = path.split("/")
        for route in self._by_length.get(len(parts), ()):
            variables = route.match(parts)
            if variables is not None:
                return route, variables
        return None

    def serves(self, app: Flask, route: Route) -> bool:
        """Whether ``route`` is served here rather than by Flask: no other rule
        of ``app`` could take its paths, and ``app`` has no Flask hook of its own."""
        settled = self._settled
        if settled is None:
            settled = (self.shadowed(app), foreign_hooks(app))
            if getattr(app, "_got_first_request", False):
                self._settled = settled
        shadowed, hooked = settled
        if hooked or route in shadowed:
            return False
        return not any(signal.receivers for signal in _REQUEST_SIGNALS)

    def shadowed(self, app: Flask) -> frozenset[Route]:
        """The routes another of ``app``'s rules could take (left to Flask)."""
        rules: list[Rule] = getattr(app.url_map, "_rules", [])
        known, shadowed = self._shadowed
        if known != len(rules):
            mine = {route.rule for route in self.routes}
            others = [rule for rule in rules if rule.rule not in mine]
            shadowed = frozenset(
                route for route in self.routes if any(route.overlaps(rule) for rule in others)
            )
            # Two routes of the fast path on one pattern: let Flask order them.
            for route in self.routes:
                if any(o is not route and o.segments == route.segments for o in self.routes):
                    shadowed |= {route}
            self._shadowed = (len(rules), shadowed)
        return shadowed


def foreign_hooks(app: Flask) -> bool:
    """Whether ``app`` has Flask hooks or handlers kiln did not install."""
    for registry in (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.url_value_preprocessors,
        app.url_default_functions,
    ):
        for functions in registry.values():
            if any(not getattr(f, "_kiln_hook", False) for f in functions):
                return True
    if app.teardown_appcontext_funcs:
        return True
    for handlers in app.error_handler_spec.values():
        for by_class in handlers.values():
            if any(not getattr(h, "_kiln_hook", False) for h in by_class.values()):
                return True
    return False


class ResourceDispatcher:
    """The WSGI app in front of Flask that serves resource requests itself."""

    def __init__(self, app: Flask, state: KilnState, router: ResourceRouter, flask_app: WSGIApp):
        self.app = app
        self.state = state
        self.router = router
        self.flask_app = flask_app
        self.prefix = router.prefix + "/"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(self.prefix) and environ.get("REQUEST_METHOD") in FAST_METHODS:
            # As werkzeug decodes PATH_INFO (the UTF-8 bytes of the path, as latin-1).
            path = path.encode("latin-1").decode(errors="replace")
            found = self.router.match(path)
            if (
                found is not None
                and environ["REQUEST_METHOD"] in found[0].methods
                and self.router.serves(self.app, found[0])
            ):
                # As Flask does once it served a request: no hook may be added later.
                self.app._got_first_request = True
                return self._serve(environ, start_response, path, *found)
        return self.flask_app(environ, start_response)

    def _serve(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        path: str,
        route: Route,
        variables: dict[str, str],
    ) -> list[bytes]:
        state = self.state
        config = state.config
        method = environ["REQUEST_METHOD"]
        start_timer(environ)
        if state.tracer is not None:
            environ["kiln.route"] = route.rule  # the request span's name
        headers = RequestHeaders(environ)
        identity = None
        context = self.app.app_context()
        context.push()
        try:
            try:
                error = request_limit_error(config, environ) or hard_eol_error(config, method)
                if error is not None:
                    raise error
                memo: Memo = {}
                authenticator = state.authenticator
                if authenticator is not None:
                    identity = authenticator.identify(environ, headers, memo)
                request = request_of(
                    environ,
                    headers,
                    path,
                    variables,
                    identity,
                    memo,
                    state,
                    self.app.config.get("TRUSTED_HOSTS"),
                )
                if route.batch is not None:
                    reply = route.batch(self, request, environ, memo)
                else:
                    assert route.endpoint is not None
                    reply = serve(route.endpoint, route.kind, request)
            except HTTPError as exc:
                reply = error_reply(exc, environ)
            except BackendError as exc:
                reply = error_reply(backend_error(exc, config), environ)
            except Exception as exc:
                reply = error_reply(unexpected_error(exc, config), environ)
            out = reply.headers
            if state.authenticator is not None:
                state.authenticator.response_headers(reply.status, identity, out)
            log_summary(config, environ, method, path, reply.status)
            out[REQUEST_ID_HEADER] = environ["kiln.request_id"]
            metrics = state.metrics
            if metrics is not None:
                metrics.request(environ, method, route.rule, reply.status)
            cors_headers(config, headers, method, out)
            soft_eol_header(config, out)
            common_headers(config, out)
        finally:
            context.pop()
        return write(reply, method, start_response)


def request_of(
    environ: dict[str, Any],
    headers: Mapping[str, str],
    path: str,
    variables: dict[str, str],
    identity: Any,
    memo: Memo,
    state: KilnState,
    trusted_hosts: Any = None,
) -> Request:
    """The :class:`Request` of a WSGI ``environ`` (its identity already known)."""
    method = environ["REQUEST_METHOD"]
    check_accept(environ.get("HTTP_ACCEPT"))
    query = environ.get("QUERY_STRING", "")
    args = (
        parse_qsl(
            query.encode("latin-1").decode(), keep_blank_values=True, errors="werkzeug.url_quote"
        )
        if query
        else []
    )
    content_type = environ.get("CONTENT_TYPE")
    limit = state.config.setting("request.max_body_bytes")
    return Request(
        method=method,
        path=path,
        variables=variables,
        args=args,
        headers=headers,
        read_body=(lambda: read_body(environ, limit)) if method in _BODY_METHODS else bytes,
        media_type=parse_options_header(content_type)[0] if content_type else None,
        identity=identity,
        principals=principals_of(identity, state.permission, memo),
        url_root=url_root(environ, state.config, trusted_hosts),
    )


def check_accept(accept: str | None) -> None:
    """406 unless an ``Accept`` header (if any) takes JSON."""
    if (
        accept
        and accept not in ("*/*", _JSON)
        and not parse_accept_header(accept, MIMEAccept).best_match([_JSON])
    ):
        raise HTTPError(
            406, ERRORS.INVALID_PARAMETERS, "Accept header should be one of ['application/json']."
        )


def read_body(environ: dict[str, Any], limit: int | None) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (``None``: no
    limit) whether its length is announced or it arrives chunked."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise HTTPError(400, ERRORS.INVALID_PARAMETERS, "Invalid Content-Length.") from None
        if size < 0:
            raise HTTPError(400, ERRORS.INVALID_PARAMETERS, "Invalid Content-Length.")
        if limit is not None and size > limit:
            raise HTTPError(413)
        return bytes(stream.read(size))
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length, no chunked framing: there is no body to read
    if limit is None:
        return bytes(stream.read())
    # A server's stream may answer a read with less than asked (a chunk at a
    # time): read until the end, or until the body is known to be too large.
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(limit + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
    raise HTTPError(413)


def serve(endpoint: Endpoint, kind: str, request: Request) -> Reply:
    """``request`` on ``endpoint`` in a unit of work of its own (or in the
    batch's it is a sub-request of); the finished reply."""
    endpoint.check(request, kind)
    unit = current_unit()
    if unit is not None:
        # A sub-request the batch sent through Flask: its response is written
        # now, so its writes are flushed now (the batch commits them).
        mark = unit.mark()
        try:
            reply = endpoint.handle(request, kind, unit)
        except HTTPError:
            unit.discard(mark)
            raise
        unit.flush()
        return reply.finish()
    state = endpoint.state
    storage = endpoint.storage

    def work(unit: UnitOfWork) -> Reply:
        return endpoint.handle(request, kind, unit)

    def run_all() -> Reply:
        # A delete alone need not read its record, unless a listener wants it.
        return run_unit(
            state, storage, work, blind_deletes=not (state.subscriptions or state.before_commit)
        )

    # PostgreSQL sends the reads of safe requests to a read replica.
    reply = storage.route_request(
        run_all,
        method=request.method,
        if_match="If-Match" in request.headers,
        resource_name=endpoint.name,
        user_id=request.user_id,
        seen=seen_timestamp(request),
    )
    return reply.finish()


def run_unit(
    state: KilnState,
    storage: StorageBase,
    work: Callable[[UnitOfWork], T],
    *,
    blind_deletes: bool = False,
) -> T:
    """``work`` in a unit of work on ``storage`` (:func:`~kiln.resource.unit_of_work.run`),
    its events delivered, its retries and events counted when metrics are on."""
    metrics = state.metrics

    def notify(events: list[ResourceChanged]) -> None:
        counts = deliver(state.subscriptions, events)
        if metrics is not None:
            metrics.events(*counts)

    on_retry = None if metrics is None else metrics.retried
    if state.tracer is None:
        return _run(state, storage, work, notify, on_retry, blind_deletes)
    with span(state.tracer, "unit of work"):
        return _run(state, storage, work, notify, on_retry, blind_deletes)


def _run(
    state: KilnState,
    storage: StorageBase,
    work: Callable[[UnitOfWork], T],
    notify: Callable[[list[ResourceChanged]], None],
    on_retry: Callable[[str], None] | None,
    blind_deletes: bool,
) -> T:
    return run(
        storage,
        state.permission,
        work,
        transient_retries=int(state.config.setting("storage.transaction_retries")),
        notify=notify,
        blind_deletes=blind_deletes,
        before_commit=before_commit_of(state),
        on_retry=on_retry,
    )


def error_reply(error: HTTPError, environ: dict[str, Any]) -> Reply:
    """The reply of ``error``: its envelope and headers."""
    environ["kiln.errno"] = error.errno  # read by the request summary log line
    return Reply(error.status, error.body, dict(error.headers))


def write(reply: Reply, method: str, start_response: Callable[..., Any]) -> list[bytes]:
    """Send ``reply`` as werkzeug would send the same JSON response."""
    status = reply.status
    headers = reply.headers
    if status == 304:
        # No body and no entity headers, but the ETag and Last-Modified.
        start_response(_status_line(status), list(headers.items()))
        return []
    body = orjson.dumps(reply.body)
    start_response(
        _status_line(status),
        [("Content-Type", _JSON), ("Content-Length", str(len(body))), *headers.items()],
    )
    return [] if method == "HEAD" else [body]


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = HTTP_STATUS_CODES.get(status, "unknown").upper()
        line = _STATUS_LINES[status] = f"{status} {reason}"
    return line
