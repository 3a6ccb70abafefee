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

from flask import Flask, Response, g, request

from kiln._state import KilnState, current_state
from kiln.auth import Identity, authenticate, load_policies, principals_for
from kiln.errors import HTTPError

__all__ = [
    "current_identity",
    "current_principals",
    "identity_fields",
    "install_auth",
]

_IDENTITY = "kiln.identity"
_PRINCIPALS = "kiln.principals"


def install_auth(app: Flask, state: KilnState) -> None:
    """Authenticate every request of ``app`` with the policies of ``auth.policies``.

    The ``accounts`` policy keeps its accounts in ``state.storage``.
    """
    config = state.config
    entries = config.setting("auth.policies")
    if not entries:
        return
    storage = state.storage if "accounts" in entries else None
    policies = load_policies(config, storage)
    state.auth_policies = tuple(policies)
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
        environ = request.environ
        environ[_IDENTITY] = found
        if found is not None:
            # The request summary log line names who made the request.
            uid, authn_type = identity_fields(environ)
            environ.setdefault("kiln.summary_fields", {}).update(uid=uid, authn_type=authn_type)

    @app.after_request
    def _auth_headers(response: Response) -> Response:
        if response.status_code == 401 and challenge and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = challenge
        if request.environ.get(_IDENTITY) is not None:
            cache_control = response.headers.get("Cache-Control", "no-cache")
            if "no-store" not in cache_control:
                response.headers["Cache-Control"] = f"{cache_control}, no-store"
        return response


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
            backend = current_state().permission
            groups = backend.user_principals if backend is not None else None
            memo[key] = principals_for(identity, groups)
        principals = environ[_PRINCIPALS] = memo[key]
    return principals


def identity_fields(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(uid, authn_type)`` of a request, for its summary log line."""
    identity: Identity | None = environ.get(_IDENTITY)
    if identity is None:
        return None, None
    return identity.prefixed_id, identity.policy
