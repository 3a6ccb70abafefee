"""``GET /v<N>/permissions``: every object the caller holds a permission on.

Off unless ``permissions_endpoint.enabled`` is set (Kinto's
``experimental_permissions_endpoint``). Answers Kinto's shape::

    {"data": [{"uri": "/buckets/b/collections/c", "resource_name": "collection",
               "id": "c", "bucket_id": "b", "collection_id": "c",
               "permissions": ["read", "record:create", "write"]}, ...]}

The objects are those of the mounted shareable resources on which one of
the caller's principals holds a permission in the permission backend
(``write`` implies ``read`` and the ``<child>:create`` permissions of the
same object), and the caller's own account (``read`` and ``write``) when
they authenticated with an accounts policy. Permissions granted by
``<resource>.<perm>_principals`` settings or inherited from a parent are
not listed. The hello view announces the ``permissions_endpoint``
capability. Sorted by ``uri``; ``resource_name=`` and
``exclude_resource_name=a,b`` narrow the list.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, request

from kiln._state import KilnState, add_api_capability, current_state
from kiln.auth.accounts import AccountsPolicy
from kiln.auth.web import current_identity, current_principals
from kiln.errors import json_response
from kiln.resource.parents import find_parents, record_permission_names

__all__ = ["install_permissions", "permissions"]

_VARIABLE = re.compile(r"<(\w+)>")


def install_permissions(app: Flask, state: KilnState) -> None:
    """Register ``GET /v<N>/permissions`` when ``permissions_endpoint.enabled`` is set."""
    if state.config.setting("permissions_endpoint.enabled"):
        app.add_url_rule(
            f"{state.api_prefix}/permissions", "kiln.permissions", permissions, methods=["GET"]
        )
        add_api_capability(
            app, "permissions_endpoint", "The permissions endpoint lists the caller's permissions."
        )


def permissions() -> Response:
    """List the caller's permissions, one entry per object."""
    state = current_state()
    entries = _object_entries(state, current_principals())
    identity = current_identity()
    if identity is not None and any(
        isinstance(policy, AccountsPolicy) and policy.name == identity.policy
        for policy in state.auth_policies
    ):
        uri = f"/accounts/{identity.user_id}"
        entries[uri] = {
            "uri": uri,
            "resource_name": "account",
            "id": identity.user_id,
            "account_id": identity.user_id,
            "permissions": ["read", "write"],
        }
    wanted = request.args.get("resource_name")
    excluded = set(request.args.get("exclude_resource_name", "").split(","))
    data = [
        entries[uri]
        for uri in sorted(entries)
        if entries[uri]["resource_name"] not in excluded
        and wanted in (None, entries[uri]["resource_name"])
    ]
    return json_response({"data": data})


def _object_entries(state: KilnState, principals: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    backend = state.permission
    if backend is None:
        return {}
    parents = find_parents(state.resources)
    shapes = []
    names: set[str] = set()
    for registration in state.resources.values():
        if registration.cls.kind != "shareable":
            continue
        allowed = record_permission_names(parents, registration)
        names |= allowed
        path = _VARIABLE.sub(r"(?P<\1>[^/]+)", re.escape(registration.record_path))
        shapes.append((re.compile(path + r"\Z"), registration.name, allowed))
    held: dict[str, set[str]] = {}
    for name in sorted(names):
        for uri in backend.principals_accessible_objects(principals, name):
            held.setdefault(uri, set()).add(name)
    entries = {}
    for uri, granted in held.items():
        for pattern, resource_name, allowed in shapes:
            found = pattern.match(uri)
            if found is None:
                continue
            if "write" in granted:
                granted = granted | {"read"} | {n for n in allowed if n.endswith(":create")}
            variables = found.groupdict()
            object_id = variables.pop("id")
            entries[uri] = {
                "uri": uri,
                "resource_name": resource_name,
                "id": object_id,
                f"{resource_name}_id": object_id,
                **variables,
                "permissions": sorted(granted),
            }
            break
    return entries
