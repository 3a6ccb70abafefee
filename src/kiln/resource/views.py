"""Mounting resources on an app, and their Flask views.

:func:`mount_resources` (called by :func:`kiln.create_app`) compiles each
declared resource into an :class:`~kiln.resource.endpoints.Endpoint`,
registers its collection and record routes with Flask, and puts the
resource fast path (:class:`~kiln.resource.dispatch.ResourceDispatcher`) in
front of Flask. Resource requests are served by the fast path; the Flask
views below serve them when the app has Flask hooks of its own (see
:mod:`kiln.resource.dispatch`), with the same answers.

Each view reads Flask's request into a :class:`~kiln.resource.endpoints.Request`,
lets the endpoint handle it in a unit of work, and writes the reply with the
protocol's headers (``ETag``, ``Last-Modified``, ``Next-Page``,
``Total-Records``, ``Cache-Control``). Request bodies are bounded in size
(``request.max_body_bytes``, 413) and in JSON nesting depth
(:data:`~kiln._json.MAX_JSON_DEPTH`, 400 errno 107).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, current_app, request

from kiln._json import MAX_JSON_DEPTH, json_too_deep
from kiln._state import KilnState, state_of
from kiln.auth.web import current_identity, current_principals
from kiln.exceptions import StartupError
from kiln.resource import Registration
from kiln.resource.batch import serve_batch
from kiln.resource.dispatch import (
    ResourceDispatcher,
    ResourceRouter,
    Route,
    check_accept,
    serve,
)
from kiln.resource.endpoints import (
    Authorization,
    Authorizer,
    Endpoint,
    Reply,
    Request,
    check_permission_settings,
)
from kiln.resource.parents import find_parents, record_permission_names
from kiln.views import absolute_url

__all__ = [
    "MAX_JSON_DEPTH",
    "Authorization",
    "Authorizer",
    "RecordCall",
    "check_permission_settings",
    "flask_request",
    "json_too_deep",
    "mount_resources",
    "record_subroute",
    "reply_response",
    "set_authorizer",
]


def mount_resources(app: Flask, state: KilnState, declared: list[Registration]) -> None:
    """Mount the resources ``declared`` on ``app``, on the backends of ``state``
    (and the batch, which :func:`~kiln.resource.batch.install_batch` installed)."""
    for registration in declared:
        check_permission_settings(state.config, registration.name)
        state.resources[registration.name] = registration
    parents = find_parents(state.resources)
    router = ResourceRouter(state)
    prefix = state.api_prefix
    endpoints: dict[str, Endpoint] = {}
    for registration in declared:
        endpoint = Endpoint(
            state, registration, parents, record_permission_names(parents, registration)
        )
        for kind, path, methods in (
            ("collection", registration.collection_path, registration.collection_methods),
            ("record", registration.record_path, registration.record_methods),
        ):
            rule = prefix + path
            app.add_url_rule(
                rule,
                f"{registration.name}-{kind}",
                _view(endpoint, kind),
                methods=[m for m in methods if m != "HEAD"],
            )
            router.add(Route.of(rule, endpoint, kind, methods))
        endpoints[registration.name] = endpoint
    _mount_subroutes(app, state, endpoints)
    # create_app installed the batch view before: the fast path serves it too.
    router.add(Route.of(f"{prefix}/batch", None, "batch", ("POST",), serve_batch))
    state.router = router
    app.wsgi_app = ResourceDispatcher(app, state, router, app.wsgi_app)  # type: ignore[method-assign]


@dataclass(frozen=True)
class RecordCall:
    """A request on a record's sub-route (:func:`record_subroute`).

    ``variables`` are the record's path variables (``id`` and its parents');
    :meth:`serve` sends a request to the record itself, as the caller.
    """

    endpoint: Endpoint
    variables: Mapping[str, str]
    #: The record's URL path, with the version prefix.
    path: str

    @property
    def uri(self) -> str:
        """The record's URI without the version prefix (its permissions' object id)."""
        return self.path.removeprefix(self.endpoint.prefix)

    def serve(
        self, method: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """``method`` on the record with JSON ``body``, as the caller of the
        sub-route, with every check of a request sent to the record itself
        (permissions, preconditions, schema), in a unit of work of its own.

        ``headers`` replace the sub-route request's (its ``Authorization``,
        ``If-Match``... are kept otherwise).

        :raises HTTPError: the record's answer when it is an error.
        """
        req = request._get_current_object()  # type: ignore[attr-defined]
        sent = {
            key: value
            for key, value in req.headers.items()
            if key.lower() not in ("content-type", "content-length")
        }
        sent.update(headers or {})
        has_body = body is not None
        return serve(
            self.endpoint,
            "record",
            Request(
                method=method,
                path=self.path,
                variables=dict(self.variables),
                args=[],
                headers=sent,
                read_body=lambda: b"",
                media_type="application/json" if has_body else None,
                identity=current_identity(),
                principals=current_principals(),
                url_root=absolute_url(""),
                parsed_body=body,
            ),
        )


def record_subroute(
    app: Flask,
    resource_name: str,
    name: str,
    view: Callable[[RecordCall], Response],
    methods: tuple[str, ...] = ("POST",),
) -> None:
    """Serve ``<record path>/<name>`` (``/buckets/b/.../records/r/attachment``)
    with ``view(call)`` for ``methods``.

    Call it from a views module's ``init_app``; the route is mounted with
    the resource. The view decides what to do; what it does to the record
    goes through :meth:`RecordCall.serve`, hence through the record's own
    permission checks and unit of work.
    """
    state_of(app).record_subroutes.append((resource_name, name, view, tuple(methods)))


def _mount_subroutes(app: Flask, state: KilnState, endpoints: Mapping[str, Endpoint]) -> None:
    for resource_name, name, view, methods in state.record_subroutes:
        endpoint = endpoints.get(resource_name)
        if endpoint is None:
            raise StartupError(
                f"The sub-route {name!r} is declared on {resource_name!r}, "
                "which is not a mounted resource."
            )
        rule = f"{state.api_prefix}{endpoint.registration.record_path}/{name}"
        app.add_url_rule(
            rule, f"{resource_name}-{name}", _subroute(endpoint, view), methods=methods
        )


def _subroute(endpoint: Endpoint, view: Callable[[RecordCall], Response]) -> Any:
    def subroute(**variables: str) -> Response:
        path = request.path.rsplit("/", 1)[0]
        return view(RecordCall(endpoint, variables, path))

    return subroute


def set_authorizer(app: Flask, authorizer: Authorizer | None) -> None:
    """Ask ``authorizer`` before every resource request of ``app`` (None: allow all).

    It runs inside the request's unit of work, after the parent records
    were found and before anything is read or written, for direct requests
    and batch sub-requests alike. Without one, every request is allowed
    (authentication and permissions plug in here).
    """
    state_of(app).authorizer = authorizer


def _view(endpoint: Endpoint, kind: str) -> Any:
    def view(**variables: str) -> Response:
        return reply_response(serve(endpoint, kind, flask_request(variables)))

    view.__name__ = f"{endpoint.name}_{kind}"
    return view


def flask_request(variables: dict[str, str]) -> Request:
    """Flask's current request as a :class:`~kiln.resource.endpoints.Request`."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    check_accept(req.headers.get("Accept"))
    return Request(
        method=req.method,
        path=req.path,
        variables=dict(variables),
        args=list(req.args.items(multi=True)),
        headers=req.headers,
        read_body=lambda: req.get_data(cache=True),
        media_type=req.mimetype or None,
        identity=current_identity(),
        principals=current_principals(),
        url_root=absolute_url(""),
    )


class _NotModifiedResponse(Response):
    """A 304 that keeps ``Last-Modified`` (werkzeug drops it with the entity headers).

    The protocol's 304 carries the current ``ETag`` and ``Last-Modified``.
    """

    def get_wsgi_headers(self, environ: Any) -> Any:
        headers = super().get_wsgi_headers(environ)
        headers["Last-Modified"] = self.headers["Last-Modified"]
        return headers


def reply_response(reply: Reply) -> Response:
    """A finished :class:`~kiln.resource.endpoints.Reply` as a Flask response."""
    if reply.status == 304:
        response: Response = _NotModifiedResponse(status=304)
    else:
        response = current_app.response_class(
            orjson.dumps(reply.body), reply.status, mimetype="application/json"
        )
    response.headers.update(reply.headers)
    return response
