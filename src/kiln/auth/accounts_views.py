"""The ``/v<N>/accounts`` endpoints of the ``accounts`` policy.

==========================  ===============================================
``POST /accounts``          sign up: ``{"data": {"id": "alice", "password":
                            "..."}}`` (allowed to ``accounts.create_principals``)
``GET /accounts``           the caller's own account; every account for
                            ``accounts.admin_principals``
``GET /accounts/<id>``      an account (its owner, or an administrator)
``PUT /accounts/<id>``      sign up when it does not exist; else set a new
                            ``password`` (its owner, authenticated with the
                            old one, or an administrator: a reset)
``PATCH /accounts/<id>``    set a new ``password`` (as ``PUT``)
``DELETE /accounts/<id>``   delete the account (its owner, or an administrator)
==========================  ===============================================

Responses never contain the password hash. Every write is one unit of
work of the storage backend.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, Response, request

from kiln._state import KilnState, add_api_capability
from kiln.auth import denied
from kiln.auth.accounts import AccountNotFoundError, AccountsPolicy
from kiln.auth.web import current_identity, current_principals
from kiln.errors import ERRORS, HTTPError, invalid_parameter, json_response

__all__ = ["install_accounts"]


def _invalid(name: str, description: str) -> HTTPError:
    return invalid_parameter("body", name, description)


def _data() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise HTTPError(
            415,
            ERRORS.INVALID_PARAMETERS,
            "Content-Type header should be one of ['application/json'].",
        )
    try:
        body = orjson.loads(request.get_data(cache=True) or b"null")
    except orjson.JSONDecodeError as exc:
        raise _invalid("body", f"Invalid JSON request body: {exc}") from None
    if not isinstance(body, dict) or set(body) - {"data"}:
        raise _invalid("body", 'The body must be a JSON object like {"data": {...}}.')
    data = body.get("data")
    if not isinstance(data, dict):
        raise _invalid("data", "data must be a JSON object.")
    if not isinstance(data.get("password"), str):
        raise _invalid("data.password", "password is required and must be a string.")
    return data


def install_accounts(app: Flask, state: KilnState) -> None:
    """Serve the accounts endpoints on ``app`` when ``auth.policies`` has ``accounts``."""
    policy = next((p for p in state.auth_policies if isinstance(p, AccountsPolicy)), None)
    if policy is None:
        return
    store = policy.store
    prefix = state.api_prefix
    # Kinto's name: clients and the Kinto admin look for it.
    add_api_capability(app, "accounts", "Manage user accounts.")

    def is_admin() -> bool:
        return policy.is_admin(current_principals())

    def is_self(username: str) -> bool:
        identity = current_identity()
        return identity is not None and identity.prefixed_id == f"{policy.name}:{username}"

    def allowed(username: str) -> None:
        if not (is_self(username) or is_admin()):
            raise denied(current_principals(), "Only the account's owner or an administrator may.")

    def sign_up(data: dict[str, Any], username: str | None = None) -> Response:
        if not policy.may_create(current_principals()):
            raise denied(current_principals(), "This user may not create accounts.")
        fields = {k: v for k, v in data.items() if k not in ("id", "password")}
        name = username if username is not None else data.get("id")
        if not isinstance(name, str):
            raise _invalid("data.id", "id (the username) is required and must be a string.")
        if username is not None and data.get("id", username) != username:
            raise _invalid("data.id", "id does not match the URL.")
        with store.storage.transaction():
            account = store.create(name, data["password"], **fields)
        return json_response({"data": account}, 201)

    def collection() -> Response:
        if request.method == "POST":
            return sign_up(_data())
        if is_admin():
            return json_response({"data": store.all()})
        identity = current_identity()
        if identity is None or identity.policy != policy.name:
            raise denied(current_principals(), "Only accounts may list accounts.")
        return json_response({"data": [store.get(identity.user_id)]})

    def record(username: str) -> Response:
        method = request.method
        data = _data() if method in ("PUT", "PATCH") else {}
        if method == "PUT":
            try:
                store.get(username)
            except AccountNotFoundError:
                return sign_up(data, username)
        allowed(username)
        if method == "GET":
            return json_response({"data": store.get(username)})
        if method == "DELETE":
            with store.storage.transaction():
                return json_response({"data": store.delete(username)})
        with store.storage.transaction():
            account = store.change_password(username, None, data["password"])
        return json_response({"data": account})

    app.add_url_rule(f"{prefix}/accounts", "kiln.accounts", collection, methods=["GET", "POST"])
    app.add_url_rule(
        f"{prefix}/accounts/<username>",
        "kiln.account",
        record,
        methods=["GET", "PUT", "PATCH", "DELETE"],
    )
