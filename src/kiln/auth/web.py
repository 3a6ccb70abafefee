"""Authentication in requests: the Flask side of :mod:`kiln.auth`.

:func:`install_auth` (called by :func:`kiln.create_app`) builds the policies
of ``auth.policies`` once and authenticates every request in a
``before_request`` hook, before any view runs: wrong credentials answer 401
with the first policy's ``WWW-Authenticate`` challenge. Views then ask
:func:`current_identity` and :func:`current_principals`.

Once per request, shared with batch sub-requests: a batch and its
sub-requests run in one Flask app context, so the results are memoized
there, keyed by the values of the headers the policies read
(:attr:`~kiln.auth.AuthenticationPolicy.headers`). A batch of 25
sub-requests with the batch's credentials verifies a password once; a
sub-request that sends other credentials is authenticated on its own.
Wrong credentials are memoized too, so a batch cannot be used to try a
password 25 times at the price of one request.

Responses to authenticated requests carry ``Cache-Control: no-store``
(a browser must not show one user's data to the next).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, g, request

from kiln.application import kiln_state, register_heartbeat
from kiln.auth import Identity, authenticate, load_policies, principals_for
from kiln.errors import HTTPError
from kiln.permission import PermissionBase, load_permission

__all__ = [
    "current_identity",
    "current_principals",
    "identity_fields",
    "install_auth",
    "permission_for",
]

_IDENTITY = "kiln.identity"
_PRINCIPALS = "kiln.principals"


def install_auth(app: Flask) -> None:
    """Authenticate every request of ``app`` with the policies of ``auth.policies``."""
    config = kiln_state(app).config
    entries = config.setting("auth.policies")
    if not entries:
        return
    storage = None
    if "accounts" in entries:
        from kiln.resource.views import storage_for

        storage = storage_for(app)
    policies = load_policies(config, storage)
    app.extensions["kiln.auth_policies"] = policies
    headers = sorted({name.lower() for policy in policies for name in policy.headers})
    challenge = next((c for c in (p.challenge() for p in policies) if c), None)

    @app.before_request
    def _authenticate() -> None:
        key = tuple(request.headers.get(name, "") for name in headers)
        memo: dict[tuple[str, ...], Identity | HTTPError | None]
        memo = g.setdefault("kiln_identities", {})
        if key not in memo:
            try:
                memo[key] = authenticate(policies, request.headers)  # type: ignore[arg-type]
            except HTTPError as exc:
                memo[key] = exc
        found = memo[key]
        if isinstance(found, HTTPError):
            raise found
        request.environ[_IDENTITY] = found

    @app.after_request
    def _auth_headers(response: Response) -> Response:
        if response.status_code == 401 and challenge and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = challenge
        if request.environ.get(_IDENTITY) is not None:
            cache_control = response.headers.get("Cache-Control", "no-cache")
            if "no-store" not in cache_control:
                response.headers["Cache-Control"] = f"{cache_control}, no-store"
        return response

    if storage is not None:
        from kiln.auth.accounts import AccountsPolicy
        from kiln.auth.accounts_views import install_accounts

        accounts = next(p for p in policies if isinstance(p, AccountsPolicy))
        install_accounts(app, accounts)


def current_identity() -> Identity | None:
    """Who made the current request, or ``None`` when anonymous."""
    identity: Identity | None = request.environ.get(_IDENTITY)
    return identity


def current_principals() -> tuple[str, ...]:
    """The principals of the current request (see :func:`kiln.auth.principals_for`).

    Groups come from the app's permission backend, when it has one; they
    are read once per identity and request (batch included).
    """
    environ = request.environ
    principals: tuple[str, ...] | None = environ.get(_PRINCIPALS)
    if principals is None:
        identity = current_identity()
        memo: dict[str | None, tuple[str, ...]] = g.setdefault("kiln_principals", {})
        key = identity.prefixed_id if identity is not None else None
        if key not in memo:
            backend: PermissionBase | None = current_app.extensions.get("kiln.permission")
            groups = backend.user_principals if backend is not None else None
            memo[key] = principals_for(identity, groups)
        principals = environ[_PRINCIPALS] = memo[key]
    return principals


def permission_for(app: Flask) -> PermissionBase:
    """The app's permission backend, built (and its schema initialized) on first use."""
    backend: PermissionBase | None = app.extensions.get("kiln.permission")
    if backend is None:
        config = kiln_state(app).config
        backend = load_permission(config)
        if config.setting("storage.initialize_on_startup"):
            backend.initialize_schema()
        app.extensions["kiln.permission"] = backend
        register_heartbeat(app, "permission", backend.heartbeat)
    return backend


def identity_fields(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(uid, authn_type)`` of a request, for its summary log line."""
    identity: Identity | None = environ.get(_IDENTITY)
    if identity is None:
        return None, None
    return identity.prefixed_id, identity.policy
