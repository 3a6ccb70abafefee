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

from collections.abc import Mapping, MutableMapping
from typing import Any

from flask import Flask, Response, g, request

from kiln._state import KilnState, current_state, kiln_hook
from kiln.auth import (
    AuthenticationPolicy,
    Identity,
    Principals,
    Refusal,
    identify,
    load_policies,
)
from kiln.permission import PermissionBase

__all__ = [
    "REFUSED_BY",
    "Authenticator",
    "current_identity",
    "current_principals",
    "identity_fields",
    "install_auth",
    "note_identity",
    "principals_of",
]

_IDENTITY = "kiln.identity"
#: What ``environ`` holds for a request whose credentials a policy refused:
#: the policy's name (:meth:`Authenticator.identify` sets it; metrics read it).
REFUSED_BY = "kiln.refused_by"
_PRINCIPALS = "kiln.principals"

#: What a unit of requests (a request, or a batch and its sub-requests) remembers:
#: the identity found for each set of credentials, the principals of each user.
Memo = MutableMapping[Any, Any]


class Authenticator:
    """The app's authentication policies and what requests get from them.

    Used by both request paths: Flask's hooks (:func:`install_auth`) and the
    resource fast path (:mod:`kiln.resource.dispatch`).
    """

    def __init__(self, policies: list[AuthenticationPolicy]) -> None:
        self.policies = policies
        #: The request headers the policies read, lower-cased.
        self.headers = sorted({name.lower() for policy in policies for name in policy.headers})
        #: The first policy's ``WWW-Authenticate`` challenge.
        self.challenge = next((c for c in (p.challenge() for p in policies) if c), None)

    def identify(
        self, environ: dict[str, Any], headers: Mapping[str, str], memo: Memo
    ) -> Identity | None:
        """Who sent ``headers`` (``None``: anonymous), once per set of
        credentials, noted in ``environ`` (:func:`note_identity`).

        :raises HTTPError: 401, wrong credentials (memoized too);
            ``environ["kiln.refused_by"]`` names the policy that refused them.
        """
        key = ("identity", *(headers.get(name, "") for name in self.headers))
        if key not in memo:
            memo[key] = identify(self.policies, headers)
        found: Identity | Refusal | None = memo[key]
        if isinstance(found, Refusal):
            environ[REFUSED_BY] = found.policy
            raise found.error
        note_identity(environ, found)
        return found

    def response_headers(
        self, status: int, identity: Identity | None, headers: MutableMapping[str, str]
    ) -> None:
        """The challenge on a 401, ``no-store`` on responses to authenticated requests."""
        if status == 401 and self.challenge and "WWW-Authenticate" not in headers:
            headers["WWW-Authenticate"] = self.challenge
        if identity is not None:
            cache_control = headers.get("Cache-Control", "no-cache")
            if "no-store" not in cache_control:
                headers["Cache-Control"] = f"{cache_control}, no-store"


def principals_of(
    identity: Identity | None, permission: PermissionBase | None, memo: Memo
) -> Principals:
    """The principals of ``identity`` (see :class:`kiln.auth.Principals`),
    with its groups from ``permission``, read once per user and ``memo``
    when first needed."""
    key = ("principals", identity.prefixed_id if identity is not None else None)
    principals: Principals | None = memo.get(key)
    if principals is None:
        groups = permission.user_principals if permission is not None else None
        principals = memo[key] = Principals(identity, groups)
    return principals


def install_auth(app: Flask, state: KilnState) -> None:
    """Authenticate every request of ``app`` with the policies of ``auth.policies``.

    The ``accounts`` policy (and any with ``needs_storage``) keeps its state
    in ``state.storage``.
    """
    config = state.config
    entries = config.setting("auth.policies")
    if not entries:
        return
    authenticator = Authenticator(load_policies(config, state.storage))
    state.auth_policies = tuple(authenticator.policies)
    state.authenticator = authenticator

    @app.before_request
    @kiln_hook
    def _authenticate() -> None:
        memo: Memo = g.setdefault("kiln_auth_memo", {})
        authenticator.identify(request.environ, request.headers, memo)  # type: ignore[arg-type]

    @app.after_request
    @kiln_hook
    def _auth_headers(response: Response) -> Response:
        identity = request.environ.get(_IDENTITY)
        authenticator.response_headers(response.status_code, identity, response.headers)  # type: ignore[arg-type]
        return response


def note_identity(environ: dict[str, Any], identity: Identity | None) -> None:
    """Keep who made the request of ``environ``, for views and its summary log line."""
    environ[_IDENTITY] = identity
    if identity is not None:
        uid, authn_type = identity_fields(environ)
        environ.setdefault("kiln.summary_fields", {}).update(uid=uid, authn_type=authn_type)


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
        memo: Memo = g.setdefault("kiln_auth_memo", {})
        found = principals_of(current_identity(), current_state().permission, memo)
        principals = environ[_PRINCIPALS] = found.resolve()
    return principals


def identity_fields(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(uid, authn_type)`` of a request, for its summary log line."""
    identity: Identity | None = environ.get(_IDENTITY)
    if identity is None:
        return None, None
    return identity.prefixed_id, identity.policy
