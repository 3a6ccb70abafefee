"""API documentation: Clay's ``/_docs``, an OpenAPI 3.1 document, a human page.

List ``kiln.docs`` in the config's ``views`` (as Clay's ``clay.docs``)::

    views:
      - kiln.docs
      - myservice.views

and the app serves:

=========================  ====================================================
``GET /_docs``             Clay's JSON, built from route docstrings
``GET /v<N>/__api__``      the OpenAPI 3.1 document: plain routes, resources,
                           batch, errors, security schemes
``GET /docs``              a page rendering it (Swagger UI, served by kiln)
=========================  ====================================================

``docs.enabled: false`` turns all three off (404); the setting is read per
request, so a reload applies it. :func:`install` serves the OpenAPI document
and the page without ``/_docs``, for apps that want them without listing
the module.

The document is built on first request (after every resource is mounted)
and rebuilt after a config reload. Docstring problems never fail a
request: they are listed in ``warnings`` (``/_docs``) and
``x-kiln-warnings`` (OpenAPI), and logged once by ``kiln.docs``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import html
import logging
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request, send_file

from kiln.__about__ import __version__
from kiln._state import api_version, state_of
from kiln.auth import AuthenticationPolicy
from kiln.config import Configuration, Setting, register_setting
from kiln.docs._clay import build_clay_docs
from kiln.docs._models import Models
from kiln.docs.openapi import ApiInfo, ResourceEndpoints, Route, build_openapi
from kiln.errors import ERRORS, HTTPError, json_response
from kiln.views import absolute_url

__all__ = [
    "asset_view",
    "clay_docs_view",
    "init_app",
    "install",
    "openapi_document",
    "openapi_view",
    "page_view",
    "security_scheme",
    "swagger_ui_directory",
]

logger = logging.getLogger("kiln.docs")

register_setting(
    Setting(
        "docs.enabled",
        (bool,),
        True,
        "Serve the OpenAPI document (`/v<N>/__api__`), the `/docs` page and, when "
        "`kiln.docs` is in `views`, `/_docs`.",
        True,
    )
)
register_setting(
    Setting(
        "docs.base_path",
        (str, None),
        None,
        "`basePath` of `/_docs` (Clay's key); default: the request's URL root.",
        True,
    )
)

STATIC = Path(__file__).parent / "static"
#: The Swagger UI files the page uses, from the flask-swagger-ui package.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
KILN_FILES = ("kiln-docs.js",)
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}
#: Endpoints that are pages and files, not API operations.
_NOT_API = frozenset({"static", "kiln.docs.page", "kiln.docs.asset"})
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} — API documentation</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui" data-spec="{spec}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/kiln-docs.js"></script>
</body>
</html>
"""


def swagger_ui_directory() -> Path:
    """Where the flask-swagger-ui package keeps Swagger UI's files."""
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


@dataclass
class _DocsState:
    """What one app caches: the document built for one config tree."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    built_for: Any = None
    document: dict[str, Any] | None = None


def install(app: Flask) -> None:
    """Serve ``/v<N>/__api__`` and ``/docs`` on ``app`` (idempotent)."""
    state = state_of(app)
    if state.docs is not None:
        return
    state.docs = _DocsState()
    prefix = state.api_prefix
    app.add_url_rule(f"{prefix}/__api__", "kiln.docs.openapi", openapi_view)
    app.add_url_rule("/docs", "kiln.docs.page", page_view)
    app.add_url_rule("/docs/assets/<name>", "kiln.docs.asset", asset_view)


def init_app(app: Flask) -> None:
    """Called for apps listing ``kiln.docs`` in ``views``: :func:`install`, plus ``/_docs``."""
    install(app)
    if "kiln.docs.clay" not in app.view_functions:
        app.add_url_rule("/_docs", "kiln.docs.clay", clay_docs_view)


# --------------------------------------------------------------------------
# Gathering what the builders need
# --------------------------------------------------------------------------


def _config(app: Flask) -> Configuration:
    return state_of(app).config


def _enabled_methods(
    config: Configuration, name: str, endpoint: str, methods: tuple[str, ...]
) -> tuple[str, ...]:
    readonly = config.setting("readonly")
    rv = []
    for method in methods:
        verb = "get" if method == "HEAD" else method.lower()
        if config.get(f"{name}.{endpoint}_{verb}_enabled", True) is False:
            continue
        if readonly and method in _WRITES:
            continue
        rv.append(method)
    return tuple(rv)


def _resources(app: Flask, config: Configuration) -> list[ResourceEndpoints]:
    mounted = state_of(app).resources
    return [
        ResourceEndpoints(
            registration=registration,
            collection_methods=_enabled_methods(
                config, name, "collection", registration.collection_methods
            ),
            record_methods=_enabled_methods(config, name, "record", registration.record_methods),
            kind=str(getattr(registration.cls, "kind", "public")),
        )
        for name, registration in mounted.items()
    ]


def _routes(app: Flask, *, resources_too: bool) -> list[Route]:
    mounted = state_of(app).resources
    resource_endpoints = {
        f"{name}-{endpoint}": registration
        for name, registration in mounted.items()
        for endpoint in ("collection", "record")
    }
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in _NOT_API:
            continue
        methods = tuple(sorted(rule.methods or ()))
        if rule.endpoint in resource_endpoints:
            if resources_too:
                routes.append(_resource_route(rule.rule, rule.endpoint, methods))
            continue
        if rule.endpoint == "kiln.batch" and not resources_too:
            continue
        view = app.view_functions[rule.endpoint]
        routes.append(
            Route(
                rule.rule,
                rule.endpoint,
                methods,
                getattr(view, "__doc__", None),
                getattr(view, "__name__", ""),
            )
        )
    return routes


def _resource_route(rule: str, endpoint: str, methods: tuple[str, ...]) -> Route:
    """A resource endpoint in ``/_docs``: a summary and a pointer to the OpenAPI document."""
    name, _, kind = endpoint.rpartition("-")
    what = "records" if kind == "collection" else "one record"
    docstring = (
        f"The {name} {kind}: {what}.\n\n"
        "Its parameters, bodies, headers and errors are described by the OpenAPI document "
        "(/v<N>/__api__)."
    )
    return Route(rule, endpoint, methods, docstring, endpoint)


def _security_schemes(app: Flask) -> dict[str, dict[str, Any]]:
    """The schemes of the policies :func:`kiln.auth.web.install_auth` built, by policy name."""
    schemes = {}
    for policy in state_of(app).auth_policies:
        scheme = security_scheme(policy)
        if scheme is not None:
            schemes[policy.name] = scheme
    return schemes


_BASIC_DESCRIPTIONS = {
    "basicauth": "HTTP Basic: any `user:password` pair is an identity; the user id is "
    "derived from both.",
    "account": "HTTP Basic: the username and password of an account.",
}


def security_scheme(policy: AuthenticationPolicy) -> dict[str, Any] | None:
    """The OpenAPI Security Scheme Object of an authentication policy, or ``None``.

    ``basicauth`` and ``accounts`` read HTTP Basic credentials; any other
    policy describes itself with
    :meth:`~kiln.auth.AuthenticationPolicy.openapi_security_scheme`.
    """
    if policy.name in _BASIC_DESCRIPTIONS:
        return {"type": "http", "scheme": "basic", "description": _BASIC_DESCRIPTIONS[policy.name]}
    scheme = policy.openapi_security_scheme()
    return dict(scheme) if scheme is not None else None


def _api_info(app: Flask, config: Configuration) -> ApiInfo:
    name = config.setting("project.name")
    batch = "kiln.batch" in app.view_functions
    return ApiInfo(
        title=name,
        version=config.setting("project.version"),
        prefix=state_of(app).api_prefix,
        description=(
            f"The HTTP API of {name}, version {api_version(config)}, served by kiln "
            f"{__version__}. Resources speak kiln's resource protocol (Cliquet protocol 2): "
            "filters, sorting, keyset pagination, `_since` sync with tombstones, ETag "
            "preconditions, batch."
        ),
        docs_url=config.setting("project.docs"),
        batch=batch,
        batch_max_requests=config.setting("batch.max_requests") if batch else None,
        security_schemes=_security_schemes(app),
    )


def openapi_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (built once per config tree); ``servers`` is ``/``."""
    state: _DocsState = state_of(app).docs
    config = _config(app)
    tree = config.config
    with state.lock:
        if state.document is None or state.built_for is not tree:
            document = build_openapi(
                _api_info(app, config),
                _routes(app, resources_too=False),
                _resources(app, config),
                Models(),
            )
            for warning in document.get("x-kiln-warnings", ()):
                logger.warning("API docs: %s", warning)
            state.document, state.built_for = document, tree
        return state.document


# --------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------


def _check_enabled() -> None:
    if not _config(current_app).setting("docs.enabled"):
        raise HTTPError(404, ERRORS.MISSING_RESOURCE, "API documentation is disabled here.")


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]


def openapi_view() -> Response:
    """The OpenAPI 3.1 document of this service.

    :status 200: The document.
    :status 404: Documentation is disabled (``docs.enabled``).
    """
    _check_enabled()
    document = dict(openapi_document(_app()))
    document["servers"] = [{"url": absolute_url("")}]
    return json_response(document)


def clay_docs_view() -> Response:
    """Clay's documentation of every route, built from their docstrings.

    :status 200: The documentation, in Clay's Swagger 1.2-flavoured shape.
    :status 404: Documentation is disabled (``docs.enabled``).
    """
    _check_enabled()
    base_path = _config(current_app).setting("docs.base_path") or absolute_url("")
    body = build_clay_docs(_routes(_app(), resources_too=True), base_path)
    return json_response(body)


def page_view() -> Response:
    """The API documentation page (Swagger UI rendering ``/v<N>/__api__``)."""
    _check_enabled()
    app = _app()
    root = request.script_root
    body = _PAGE.format(
        title=html.escape(str(_config(app).setting("project.name"))),
        assets=html.escape(f"{root}/docs/assets"),
        spec=html.escape(f"{root}{state_of(app).api_prefix}/__api__"),
    )
    return Response(body, mimetype="text/html")


def asset_view(name: str) -> Response:
    """One file of the documentation page."""
    _check_enabled()
    if name in SWAGGER_UI_FILES:
        path = swagger_ui_directory() / name
    elif name in KILN_FILES:
        path = STATIC / name
    else:
        raise HTTPError(404, ERRORS.MISSING_RESOURCE, f"The docs page has no file {name!r}.")
    response = send_file(path, mimetype=_CONTENT_TYPES[path.suffix], max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
