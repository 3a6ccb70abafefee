"""OpenTelemetry spans: each request, its unit of work, each backend call.

Tracing is on when the ``opentelemetry`` extra is installed (``pip install
kiln-framework[opentelemetry]``) and configured the standard way, with
``OTEL_*`` environment variables -- or when ``tracing.enabled: true`` says
so. Otherwise nothing of OpenTelemetry is imported and a request pays one
attribute check.

Spans go to the process's tracer provider: the one
``opentelemetry-instrument`` or the application set up, else one kiln builds
from the environment (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
and the exporters named by ``OTEL_TRACES_EXPORTER``, ``otlp`` by default,
when their packages are installed).

- the request: ``GET /v1/mushrooms/<id>`` (the route template, never the
  raw path), a server span continuing the client's ``traceparent``, with
  ``http.request.method``, ``http.route``, ``http.response.status_code``
  and ``kiln.request_id``; 5xx answers mark it as an error;
- ``unit of work``: the reads, the flush and the commit of a request (a
  whole batch), retries included;
- ``storage.get``, ``permission.check_permission``, ``cache.get``...: each
  backend call, marked as an error when it raises.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from kiln._state import kiln_hook
from kiln.config import Setting, register_setting

if TYPE_CHECKING:
    from flask import Flask

    from kiln._state import KilnState
    from kiln.config import Configuration

__all__ = ["build_tracer", "install_tracing", "span"]

logger = logging.getLogger("kiln.tracing")

register_setting(
    Setting(
        "tracing.enabled",
        (bool, None),
        None,
        "OpenTelemetry spans of requests, units of work and backend calls; null: on when "
        "the `opentelemetry` extra is installed and an `OTEL_*` environment variable is set.",
    )
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build_tracer(config: Configuration, environ: dict[str, str] | None = None) -> Any:
    """kiln's OpenTelemetry tracer when tracing is on, else ``None``.

    :raises ConfigError: ``tracing.enabled`` is true but OpenTelemetry is not installed.
    """
    from kiln.exceptions import ConfigError

    env = os.environ if environ is None else environ
    enabled = config.setting("tracing.enabled")
    installed = importlib.util.find_spec("opentelemetry") is not None
    if enabled is None:
        enabled = installed and any(name.startswith("OTEL_") for name in env)
    if not enabled:
        return None
    if not installed:
        raise ConfigError(
            "tracing.enabled is true but OpenTelemetry is not installed; "
            "install it with `pip install kiln-framework[opentelemetry]`."
        )
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _provider_from_environment(env)
    return trace.get_tracer("kiln")


def _provider_from_environment(env: Any) -> None:
    """Set up the SDK's tracer provider as the ``OTEL_*`` variables say, if the SDK is there."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        logger.warning(
            "Tracing is on but no tracer provider is set and opentelemetry-sdk is not "
            "installed: spans are dropped."
        )
        return
    from importlib.metadata import entry_points

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    names = env.get("OTEL_TRACES_EXPORTER", "otlp")
    exporters = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    for name in (part.strip() for part in names.split(",")):
        if not name or name == "none":
            continue
        entry = exporters.get(name)
        if entry is None:
            logger.warning(
                "OTEL_TRACES_EXPORTER names %r, which is not installed; its spans are dropped.",
                name,
            )
            continue
        provider.add_span_processor(BatchSpanProcessor(entry.load()()))
    trace.set_tracer_provider(provider)


def span(tracer: Any, name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span of ``tracer`` around a block, current in it, marked as an error if it raises."""
    rv: AbstractContextManager[Any] = tracer.start_as_current_span(name, attributes=attributes)
    return rv


def install_tracing(app: Flask, state: KilnState) -> None:
    """Trace every request of ``app`` (when ``state.tracer`` is set): a WSGI
    layer around both the resource fast path and Flask."""
    tracer = state.tracer
    if tracer is None:
        return
    from flask import request

    @kiln_hook
    def _note_route() -> None:
        # The fast path notes its route itself; Flask's rule is gone once it answered.
        rule = request.url_rule
        if rule is not None:
            request.environ["kiln.route"] = rule.rule

    app.before_request_funcs.setdefault(None, []).insert(0, _note_route)
    app.wsgi_app = _Traced(app.wsgi_app, tracer)  # type: ignore[method-assign]


class _Traced:
    """The WSGI app ``inner``, with one server span per request."""

    def __init__(self, inner: WSGIApp, tracer: Any) -> None:
        from opentelemetry import propagate, trace

        self.inner = inner
        self.tracer = tracer
        self._extract = propagate.extract
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "")
        parent = self._extract(_Carrier(environ))
        with self.tracer.start_as_current_span(
            method, context=parent, kind=self._server, attributes={"http.request.method": method}
        ) as current:
            status: list[int] = []

            def recording_start_response(line: str, headers: Any, *args: Any) -> Any:
                status.append(int(line.split(" ", 1)[0]))
                return start_response(line, headers, *args)

            rv = self.inner(environ, recording_start_response)
            route = environ.get("kiln.route")
            if route is not None:
                current.update_name(f"{method} {route}")
                current.set_attribute("http.route", route)
            current.set_attribute("http.response.status_code", status[0])
            if status[0] >= 500:
                current.set_status(self._error)
            current.set_attribute("kiln.request_id", environ.get("kiln.request_id", ""))
            return rv


class _Carrier:
    """The WSGI environ as the headers OpenTelemetry's propagators read."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, default: Any = None) -> Any:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return default if value is None else [value]

    def keys(self) -> Iterator[str]:
        return (
            key[5:].replace("_", "-").lower() for key in self.environ if key.startswith("HTTP_")
        )
