"""Building the Flask application from configuration.

:func:`create_app` builds a Flask app from a configuration tree (Clay's keys:
``flask.init``, ``flask.config``, ``middleware``, ``views``). ``from kiln
import app`` gives the process-wide app, built lazily from
:data:`kiln.config.CONFIG` the first time it is used (ARCHITECTURE D12).

A ``views`` module registers routes in one of two ways:

- Clay's way: ``from kiln import app`` then ``@app.route(...)`` at import
  time. While :func:`create_app` imports views, ``kiln.app`` is the app being
  built; a module already imported by an earlier app has its routes copied
  onto the new one.
- the Flask-extension way: a module-level ``init_app(app)`` function, called
  for every app that lists the module.
"""

from __future__ import annotations

import contextvars
import importlib
import io
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect, Rule

from kiln import logging as kiln_logging
from kiln._headers import common_headers
from kiln._limits import install_request_limits
from kiln._state import (
    HeartbeatCheck,
    KilnState,
    add_api_capability,
    add_public_setting,
    api_major,
    kiln_hook,
    register_heartbeat,
    state_of,
)
from kiln.auth import policies_need_storage
from kiln.auth.accounts_views import install_accounts
from kiln.auth.web import install_auth
from kiln.cache import CacheBase, load_cache
from kiln.config import CONFIG, Configuration
from kiln.cors import install_cors
from kiln.docs import install as install_docs
from kiln.eos import install_eos
from kiln.errors import ERRORS, HTTPError, install_error_handlers
from kiln.exceptions import StartupError
from kiln.metrics import build_metrics, install_metrics, instrument_backend
from kiln.permission import PermissionBase, load_permission
from kiln.resource import Registration, registrations
from kiln.resource.batch import install_batch
from kiln.resource.dispatch import read_body
from kiln.resource.views import mount_resources
from kiln.storage import StorageBase, load_storage
from kiln.tracing import build_tracer, install_tracing
from kiln.views import install_utility_views, url_root

__all__ = [
    "HeartbeatCheck",
    "KilnState",
    "add_api_capability",
    "add_public_setting",
    "close_app",
    "create_app",
    "get_app",
    "kiln_config",
    "register_heartbeat",
    "reset_global_app",
]

logger = logging.getLogger("kiln.app")

#: The app whose views are being imported, so that ``kiln.app`` resolves to it.
_building: contextvars.ContextVar[Flask | None] = contextvars.ContextVar(
    "kiln_app_building", default=None
)
_global_app: Flask | None = None
_global_lock = threading.RLock()
#: Routes each views module registered on the first app that imported it.
_module_rules: dict[str, list[tuple[Rule, Callable[..., Any]]]] = {}

_VERSIONED = re.compile(r"^/v\d+(/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Characters left as they are when a decoded path is quoted back into a Location.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def kiln_config(app: Flask | None = None) -> Configuration:
    """The kiln configuration of ``app`` (default: the current app)."""
    return state_of(app or current_app).config


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------


def create_app(
    config: Configuration | Mapping[str, Any] | None = None,
    *,
    configure_logging: bool = True,
) -> Flask:
    """Build a Flask app from ``config``.

    :param config: a :class:`~kiln.config.Configuration`, a plain mapping (used
        as the whole tree), or ``None`` for the process-wide
        :data:`~kiln.config.CONFIG`.
    :param configure_logging: apply the ``logging`` keys to the process
        (:func:`kiln.logging.configure`), and again after every reload.
    :raises ConfigError: the configuration is wrong.
    :raises StartupError: a views module fails to import, a middleware entry
        is unknown, or ``flask.init`` is unusable.
    """
    if config is None:
        configuration = CONFIG
    elif isinstance(config, Configuration):
        configuration = config
    else:
        configuration = Configuration.from_mapping(config)
    configuration.config  # noqa: B018 -- load (and validate) now: a broken config fails here

    app = _new_flask(configuration)
    state = KilnState(config=configuration, api_prefix=f"/v{api_major(configuration)}")
    app.extensions["kiln"] = state
    state.metrics = build_metrics(configuration)
    state.tracer = build_tracer(configuration)

    if configure_logging:
        kiln_logging.configure(configuration)
        configuration.add_listener(kiln_logging.configure)

    install_error_handlers(app)
    install_request_limits(app, configuration)  # first: before any hook reads the request
    _install_common_hooks(app, configuration)
    app.before_request(kiln_hook(_redirects))
    install_eos(app, configuration)
    install_cors(app, configuration)
    kiln_logging.install_request_summary(app, configuration)
    install_utility_views(app, state)
    views = configuration.setting("views")
    _load_views(app, views)
    declared = [registration for module in views for registration in registrations(module)]
    _install_backends(app, state, declared)
    install_batch(app, state)
    install_auth(app, state)
    install_accounts(app, state)
    mount_resources(app, state, declared)
    install_metrics(app, state)
    install_tracing(app, state)
    install_docs(app)
    _wrap_middleware(app, configuration.setting("middleware"))
    return app


def _install_backends(app: Flask, state: KilnState, declared: list[Registration]) -> None:
    """Build the storage, permission and cache backends the app needs, once.

    Storage: for resources and for the ``accounts`` policy; permissions:
    for shareable resources; the cache: wherever there is storage. Each
    backend's schema is created or upgraded here when
    ``storage.initialize_on_startup`` is on, and each gets a heartbeat.
    """
    config = state.config
    initialize = config.setting("storage.initialize_on_startup")
    if declared or policies_need_storage(config):
        state.storage = load_storage(config)
        state.storage.declare_indexes([i for r in declared for i in r.indexes])
        if initialize:
            state.storage.initialize_schema()
        register_heartbeat(app, "storage", state.storage.heartbeat)
    if any(registration.cls.kind == "shareable" for registration in declared):
        state.permission = load_permission(config)
        if initialize:
            state.permission.initialize_schema()
        register_heartbeat(app, "permission", state.permission.heartbeat)
    if state.storage is not None:
        state.cache = load_cache(config)
        if initialize:
            state.cache.initialize_schema()
        register_heartbeat(app, "cache", state.cache.heartbeat)
    if state.metrics is not None or state.tracer is not None:
        # Measured where the app calls them: each backend's public methods, in place.
        for kind, base in (
            ("storage", StorageBase),
            ("permission", PermissionBase),
            ("cache", CacheBase),
        ):
            backend = getattr(state, kind)
            if backend is not None:
                instrument_backend(backend, kind, base, state.metrics, state.tracer)


def _new_flask(configuration: Configuration) -> Flask:
    init = dict(configuration.setting("flask.init"))
    init.setdefault("import_name", "kilnapp")
    try:
        app = Flask(**init)
    except TypeError as exc:
        raise StartupError(f"flask.init has an argument Flask() does not take: {exc}.") from None
    app.debug = bool(configuration.setting("debug.enabled"))
    app.config.update(configuration.setting("flask.config"))
    # Routes' JSON as compact as the resources' (Flask indents it in debug mode).
    app.json.compact = True  # type: ignore[attr-defined]
    return app


def _load_views(app: Flask, names: list[Any]) -> None:
    cwd = os.getcwd()
    if cwd not in sys.path:
        # Clay's behaviour: views modules sit beside the config.
        sys.path.insert(0, cwd)
    token = _building.set(app)
    try:
        for name in names:
            _load_view_module(app, name)
    finally:
        _building.reset(token)


def _load_view_module(app: Flask, name: Any) -> None:
    from kiln.exceptions import KilnError

    if not isinstance(name, str) or not name:
        raise StartupError(f"views entries must be module names, got {name!r}.")
    if name in _module_rules and name in sys.modules:
        for rule, view in _module_rules[name]:
            app.url_map.add(rule.empty())
            app.view_functions[rule.endpoint] = view
        module = sys.modules[name]
    else:
        before = {id(rule) for rule in app.url_map.iter_rules()}
        try:
            module = importlib.import_module(name)
        except KilnError:
            raise  # already one sentence naming what is wrong (a resource's schema, a key)
        except Exception as exc:
            raise StartupError(
                f"views module {name!r} failed to import: {_describe(exc)}. "
                "Check the 'views' list of your config and that the module is importable "
                "from the working directory."
            ) from exc
        added = [rule for rule in app.url_map.iter_rules() if id(rule) not in before]
        _module_rules[name] = [(rule.empty(), app.view_functions[rule.endpoint]) for rule in added]
    init_app = getattr(module, "init_app", None)
    if callable(init_app):
        init_app(app)


def _middleware_entries(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for entry in spec:
            if isinstance(entry, Mapping):
                items.extend(entry.items())
            else:
                items.append((entry, {}))
    entries = []
    for name, kwargs in items:
        if not isinstance(name, str) or "." not in name:
            raise StartupError(
                f"middleware entry {name!r} must be a dotted path like 'package.module.Callable'."
            )
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise StartupError(f"middleware entry {name!r} takes a mapping of keyword arguments.")
        entries.append((name, dict(kwargs)))
    return entries


def _wrap_middleware(app: Flask, spec: Any) -> None:
    for name, kwargs in _middleware_entries(spec):
        module_name, _, attribute = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise StartupError(
                f"middleware {name!r}: module {module_name!r} cannot be imported "
                f"({_describe(exc)})."
            ) from exc
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise StartupError(f"middleware {name!r}: no callable named {attribute!r} in it.")
        try:
            app.wsgi_app = factory(app.wsgi_app, **kwargs)  # type: ignore[method-assign]
        except Exception as exc:
            raise StartupError(f"middleware {name!r} failed to start: {_describe(exc)}.") from exc


def _describe(exc: BaseException) -> str:
    from kiln.exceptions import KilnError

    if isinstance(exc, KilnError):
        return str(exc)  # kiln's own errors are sentences; their class name adds nothing
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# --------------------------------------------------------------------------
# The process-wide app
# --------------------------------------------------------------------------


def get_app() -> Flask:
    """The process-wide app (``from kiln import app``), built on first use.

    While :func:`create_app` imports views modules, this is the app being
    built, so Clay-style modules register their routes on it.
    """
    building = _building.get()
    if building is not None:
        return building
    global _global_app
    if _global_app is None:
        with _global_lock:
            if _global_app is None:
                _global_app = create_app(CONFIG)
    return _global_app


def close_app(app: Flask) -> None:
    """Release what ``app`` holds: its cache, permission and storage backends'
    connections and files, and its authentication policies. The app cannot
    serve afterwards; call it when throwing an app away (tests, reloaders)."""
    state_of(app).close()


def reset_global_app() -> None:
    """Forget the process-wide app (tests, and tools that rebuild it)."""
    global _global_app
    with _global_lock:
        _global_app = None


# --------------------------------------------------------------------------
# Request hooks
# --------------------------------------------------------------------------


def _redirects() -> Response | None:
    """Version-prefix and trailing-slash redirects (307, same origin only)."""
    exc = request.routing_exception
    if exc is None:
        return None
    path = request.path
    if _CONTROL.search(path) or _CONTROL.search(request.query_string.decode("latin-1")):
        raise HTTPError(400, ERRORS.INVALID_PARAMETERS, "The URL contains control characters.")
    if isinstance(exc, RequestRedirect):
        # werkzeug's slash redirects (``/v1`` -> ``/v1/``, merged slashes): keep
        # only the path, so the Location can never name another host.
        return _redirect_to(unquote(urlsplit(exc.new_url).path))
    if not isinstance(exc, NotFound):
        return None
    state = state_of(current_app)
    config = state.config
    prefix = state.api_prefix
    candidates = []
    if config.setting("trailing_slash_redirect_enabled") and len(path) > 1 and path.endswith("/"):
        candidates.append(path.rstrip("/") or "/")
    if config.setting("version_prefix_redirect_enabled") and not _VERSIONED.match(path):
        candidates.append(prefix + path)
        if len(path) > 1 and path.endswith("/"):
            candidates.append(prefix + path.rstrip("/"))
    for candidate in candidates:
        if _routable(candidate):
            return _redirect_to(candidate)
    if _VERSIONED.match(path) and not (path == prefix or path.startswith(prefix + "/")):
        raise HTTPError(
            404,
            ERRORS.VERSION_NOT_AVAILABLE,
            f"This service serves API version {prefix[1:]}; the path asks for another one.",
        )
    return None


def _routable(path: str) -> bool:
    if path.startswith(("//", "/\\")):
        return False
    adapter = current_app.url_map.bind("localhost")
    try:
        adapter.match(path, method=request.method)
    except MethodNotAllowed:
        return True
    except (NotFound, RequestRedirect):
        return False
    return True


def _redirect_to(path: str) -> Response:
    if not path.startswith("/") or path.startswith(("//", "/\\")):
        raise HTTPError(400, ERRORS.INVALID_PARAMETERS, "The URL cannot be redirected safely.")
    location = quote(path, safe=_PATH_SAFE)
    query = request.query_string.decode("latin-1")
    if query:
        location += "?" + quote(query, safe=_PATH_SAFE + "?%")
    response = current_app.response_class(status=307)
    response.headers["Location"] = location
    return response


def _install_common_hooks(app: Flask, config: Configuration) -> None:
    """The body limit and the headers every response carries.

    The hooks hold the app's configuration (reload swaps its tree, not the
    object), so they need no context lookup per request.
    """

    @app.before_request
    @kiln_hook
    def _body_limit() -> None:
        # Per request rather than in app.config, so a reload changes it.
        limit = config.setting("request.max_body_bytes")
        request.max_content_length = limit
        environ = request.environ
        if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            # A chunked body: werkzeug would cut it at the limit without a word
            # (a 3 MB body whose first MiB parses would be stored). Read it here,
            # refused past the limit, and hand on what was read.
            environ["wsgi.input"] = io.BytesIO(read_body(environ, limit))
        if config.setting("trusted_hosts"):
            url_root(environ, config)  # a Host the setting does not list is a 400

    @app.after_request
    @kiln_hook
    def _common_headers(response: Response) -> Response:
        common_headers(config, response.headers)  # type: ignore[arg-type]
        return response
