"""HTTP views of registered resources: the only resource module that touches Flask.

Each view reads the request (headers, query string, JSON body), asks the
sans-IO :class:`~kiln.resource.model.Model`, and writes the response with
the protocol's headers (``ETag``, ``Last-Modified``, ``Next-Page``,
``Total-Records``, ``Cache-Control``). A request is one unit of work: one
storage transaction, committed when the view succeeds and rolled back when
it raises; events are sent after the commit (D10).

Request bodies are bounded twice: in size (``request.max_body_bytes``, 413)
and in JSON nesting depth (:data:`MAX_JSON_DEPTH`, 400 errno 107), so that a
deeply nested body is refused up front rather than failing deep inside a
serializer or a backend's JSON functions with a 500.

Nested resources and their parents
----------------------------------

A resource whose ``collection_path`` holds variables
(``/buckets/{bucket_id}/collections``) is *nested*. Its parent is the
mounted resource whose ``record_path`` is the longest prefix of that
collection path, compared segment by segment with every variable treated as
a wildcard (``/buckets/{id}`` is the parent of
``/buckets/{bucket_id}/collections``); the parent's path variables take
their values from the child's, in order (its ``{id}`` is the child's
``{bucket_id}``). Every request on a nested resource first checks, inside
its unit of work, that each ancestor record exists (grandparents first), in
the collection its own ``get_parent_id`` names; a missing (or deleted)
ancestor answers 404 errno 110 with ``details: {"id", "resource_name"}``
naming the first missing one. A collection path whose prefix matches no
mounted record path (a parent that is not a kiln resource) is not checked.
Parents are resolved once, when the app mounts its resources, so the order in
which resources are declared or mounted does not matter.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jsonpatch
import orjson
from flask import Flask, Request, Response, current_app, g, request

from kiln._state import KilnState, current_state, state_of
from kiln.auth import denied
from kiln.auth.web import current_identity, current_principals
from kiln.config import Configuration, Setting, register_setting
from kiln.errors import ERRORS, HTTPError, invalid_parameter, json_response
from kiln.exceptions import ConfigError, TransientBackendError
from kiln.resource import Registration, RequestContext
from kiln.resource.access import (
    PERMISSION_SETTINGS,
    Access,
    AccessRules,
    parse_permissions,
)
from kiln.resource.events import ResourceChanged, notify
from kiln.resource.model import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    Change,
    Model,
    NotModified,
    Preconditions,
    response_data,
)
from kiln.resource.query import (
    ID_FIELD,
    MODIFIED_FIELD,
    RESERVED_FIELDS,
    Query,
    QueryError,
    parse_query,
    select_fields,
)
from kiln.storage import Filter, Operator, RecordNotFoundError, StorageBase
from kiln.views import absolute_url

__all__ = [
    "MAX_JSON_DEPTH",
    "json_too_deep",
    "mount_resources",
    "retrying",
    "unit_of_work",
]

logger = logging.getLogger("kiln.resource")

for _setting in (
    Setting("paginate.by", (int, None), None, "Page size when a request gives no `_limit`.", True),
    Setting(
        "paginate.max_limit",
        (int,),
        10_000,
        "Largest page (`_limit` is capped to it); `Next-Page` continues past it.",
        True,
    ),
    Setting(
        "paginate.count_on_get",
        (bool,),
        False,
        "Send `Total-Records` on collection GET too (a COUNT per list; HEAD always has it).",
        True,
    ),
    Setting(
        "storage.transaction_retries",
        (int,),
        3,
        "How many times a request (or batch) the database aborted as conflicting with "
        "another (serialization failure, deadlock) runs again before answering 503.",
    ),
    Setting(
        "storage.initialize_on_startup",
        (bool,),
        True,
        "Create or upgrade the storage schema when the app starts (embedded use).",
    ),
):
    register_setting(_setting)

#: What a unit of work touched: the resource, its model (with its changes), the event payload.
_Touched = tuple[Registration, Model, dict[str, Any]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PATCH_TYPES = (JSON, MERGE_PATCH, JSON_PATCH)
BEHAVIORS = ("full", "light", "diff")
#: Deepest JSON nesting a request body may have (the envelope counts). orjson
#: refuses to serialize past 255 levels, and responses add a few (``data``,
#: a batch's ``responses``), so the bound keeps well below that.
MAX_JSON_DEPTH = 100
#: Latest timestamp a client may force (``last_modified``): the end of year
#: 9999 in milliseconds, the last date an HTTP ``Last-Modified`` can carry.
MAX_TIMESTAMP = 253_402_300_799_999
_VARIABLE = re.compile(r"<(?:[^<>:]+:)?(\w+)>")


# --------------------------------------------------------------------------
# Mounting
# --------------------------------------------------------------------------


def mount_resources(app: Flask, state: KilnState, declared: list[Registration]) -> None:
    """Mount the resources ``declared`` on ``app``, on the backends of ``state``."""
    for registration in declared:
        state.resources[registration.name] = registration
    parents = {
        registration.name: _find_parent(state.resources, registration) for registration in declared
    }
    for registration in declared:
        _mount(app, state, registration, parents)


@dataclass(frozen=True)
class Authorization:
    """What a request on a resource asks to do, as the authorization hook sees it.

    ``endpoint`` is ``collection`` or ``record``; ``object_id`` is the
    record's id on record endpoints; ``context`` carries the path variables
    and the caller (``user_id``, ``principals``).
    """

    resource_name: str
    endpoint: str
    method: str
    object_id: str | None
    parent_id: str
    context: RequestContext


#: The authorization hook: raise :class:`~kiln.errors.HTTPError` (401/403) to deny.
Authorizer = Callable[[Authorization], None]


def set_authorizer(app: Flask, authorizer: Authorizer | None) -> None:
    """Ask ``authorizer`` before every resource request of ``app`` (None: allow all).

    It runs inside the request's unit of work, after the parent records
    were found and before anything is read or written, for direct requests
    and batch sub-requests alike. Without one, every request is allowed
    (authentication and permissions plug in here).
    """
    state_of(app).authorizer = authorizer


@dataclass(frozen=True)
class _Mount:
    """What every request of a mounted resource needs, resolved once at mount time."""

    app: Flask
    state: KilnState
    registration: Registration
    config: Configuration
    storage: StorageBase
    prefix: str
    unique_fields: tuple[str, ...]
    readonly_fields: tuple[str, ...]
    #: The parent of each mounted resource (``None``: not nested).
    parents: Mapping[str, _Parent | None]
    #: What a record's ``permissions`` may name (:func:`_record_permissions`).
    record_permissions: frozenset[str]


def _mount(
    app: Flask,
    state: KilnState,
    registration: Registration,
    parents: Mapping[str, _Parent | None],
) -> None:
    prefix = state.api_prefix
    check_permission_settings(state.config, registration.name)
    assert state.storage is not None  # built by create_app for every app with resources
    mount = _Mount(
        app=app,
        state=state,
        registration=registration,
        config=state.config,
        storage=state.storage,
        prefix=prefix,
        unique_fields=tuple(registration.cls.unique_fields),
        readonly_fields=tuple(registration.cls.readonly_fields),
        parents=parents,
        record_permissions=_record_permissions(parents, registration),
    )

    def collection(**path: str) -> Response:
        return _dispatch(mount, "collection", path)

    def record(**path: str) -> Response:
        return _dispatch(mount, "record", path)

    app.add_url_rule(
        prefix + registration.collection_path,
        f"{registration.name}-collection",
        collection,
        methods=[m for m in registration.collection_methods if m != "HEAD"],
    )
    app.add_url_rule(
        prefix + registration.record_path,
        f"{registration.name}-record",
        record,
        methods=[m for m in registration.record_methods if m != "HEAD"],
    )


# --------------------------------------------------------------------------
# Parents of nested resources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parent:
    """The parent of a nested resource: its registration and where its variables come from.

    ``variables`` pairs each of the parent's record-path variables with the
    child's path variable holding its value.
    """

    registration: Registration
    variables: tuple[tuple[str, str], ...]


def _segments(path: str) -> list[str]:
    """``path``'s segments, each variable as ``<>`` (its name does not matter)."""
    return [_VARIABLE.sub("<>", segment) for segment in path.strip("/").split("/")]


def _find_parent(mounted: Mapping[str, Registration], registration: Registration) -> _Parent | None:
    child = _segments(registration.collection_path)
    best: Registration | None = None
    for candidate in mounted.values():
        prefix = _segments(candidate.record_path)
        if (
            candidate is not registration
            and len(prefix) < len(child)
            and child[: len(prefix)] == prefix
            and (best is None or len(prefix) > len(_segments(best.record_path)))
        ):
            best = candidate
    if best is None:
        return None
    names = _VARIABLE.findall(best.record_path)
    child_names = _VARIABLE.findall(registration.collection_path)
    return _Parent(best, tuple(zip(names, child_names, strict=False)))


def _check_parents(
    parents: Mapping[str, _Parent | None],
    registration: Registration,
    path: dict[str, str],
    storage: StorageBase,
    access: Access,
) -> None:
    """404 (errno 110) unless every ancestor record of this request exists.

    A caller who may not read the collection (a missing parent has no
    permissions of its own) is denied instead: 403, or 401 when anonymous,
    so the answer does not tell which parents exist.
    """
    parent = parents[registration.name]
    if parent is None:
        return
    parent_path = {name: path[child_name] for name, child_name in parent.variables}
    _check_parents(parents, parent.registration, parent_path, storage, access)
    identity = current_identity()
    context = RequestContext(
        path=parent_path, user_id=identity.prefixed_id if identity is not None else None
    )
    parent_id = parent.registration.cls().get_parent_id(context)
    name = parent.registration.name
    try:
        storage.get(name, parent_id, parent_path["id"])
    except RecordNotFoundError:
        if not access.may_collection("read"):
            raise denied(access.principals) from None
        raise HTTPError(
            404,
            ERRORS.INVALID_RESOURCE_ID,
            f"The {name} {parent_path['id']!r} this path belongs to does not exist.",
            details={"id": parent_path["id"], "resource_name": name},
        ) from None


# --------------------------------------------------------------------------
# Unit of work and events
# --------------------------------------------------------------------------


@contextlib.contextmanager
def unit_of_work(storage: StorageBase) -> Iterator[list[_Touched]]:
    """One transaction for a request (or a whole batch); events after the commit.

    Nested units join the outermost one; events are collected until it ends.
    """
    outer = "kiln_uow" not in g
    if outer:
        g.kiln_uow = []
    permission = current_state().permission
    try:
        with storage.transaction():
            if permission is None:
                yield g.kiln_uow
            else:
                with permission.transaction():
                    yield g.kiln_uow
    except BaseException:
        if outer:
            del g.kiln_uow
        raise
    if outer:
        models = g.pop("kiln_uow")
        events = _merge_events(models)
        if events:
            notify(current_app._get_current_object(), events)  # type: ignore[attr-defined]


def retrying(storage: StorageBase, work: Callable[[list[_Touched]], Response]) -> Response:
    """``work`` inside a unit of work, run again when the engine aborts it.

    A :class:`~kiln.exceptions.TransientBackendError` (a serialization
    failure or deadlock, before or at commit) means nothing was committed:
    the whole unit runs again, up to ``storage.transaction_retries`` more
    times, after a short random pause. Only the outermost unit retries (a
    batch retries as a whole, never one of its sub-requests).
    """
    retries = int(current_state().config.setting("storage.transaction_retries"))
    for attempt in range(retries if "kiln_uow" not in g else 0):
        try:
            with unit_of_work(storage) as models:
                return work(models)
        except TransientBackendError:
            logger.info("Unit of work aborted by a conflict; running it again (%d).", attempt + 1)
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    with unit_of_work(storage) as models:
        return work(models)


def _merge_events(models: list[_Touched]) -> list[ResourceChanged]:
    merged: dict[tuple[str, str, str], ResourceChanged] = {}
    for registration, model, payload in models:
        for change in model.changes:
            key = (registration.name, model.parent_id, change.action)
            event = merged.get(key)
            if event is None:
                event = merged[key] = ResourceChanged({**payload, "action": change.action})
            else:
                event.payload.pop(f"{registration.name}_id", None)
                event.payload["uri"] = payload["collection_uri"]
            event.impacted_records.append(_impacted(change))
            event.payload["timestamp"] = max(
                event.payload.get("timestamp", 0), change.new[MODIFIED_FIELD]
            )
    for event in merged.values():
        event.payload.pop("collection_uri", None)
    return list(merged.values())


def _impacted(change: Change) -> dict[str, Any]:
    impacted: dict[str, Any] = {"new": change.new}
    if change.old is not None:
        impacted["old"] = change.old
    return impacted


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------


@dataclass
class _Call:
    """One request on a mounted resource, as the endpoint handlers need it."""

    registration: Registration
    model: Model
    access: Access
    config: Configuration
    user_id: str | None


def _dispatch(mount: _Mount, endpoint: str, path: dict[str, str]) -> Response:
    registration = mount.registration
    config = mount.config
    req = request._get_current_object()  # type: ignore[attr-defined]
    method = req.method
    _check_enabled(registration, endpoint, method, config)
    _check_accept(req)
    storage = mount.storage
    identity = current_identity()
    user_id = identity.prefixed_id if identity is not None else None
    principals = current_principals()
    payload = _payload(registration, path, req.path.removeprefix(mount.prefix), user_id)
    if registration.cls.kind == "private" and identity is None:
        raise denied(principals)
    context = RequestContext(path=dict(path), user_id=user_id, principals=principals)

    def run() -> Response:
        return retrying(
            storage,
            lambda models: _attempt(mount, endpoint, path, context, payload, models),
        )

    # PostgreSQL sends the reads of safe requests to a read replica.
    return storage.route_request(
        run,
        method=method,
        if_match="If-Match" in req.headers,
        resource_name=registration.name,
        user_id=user_id,
        seen=_seen_timestamp(req),
    )


def _seen_timestamp(req: Request) -> int | None:
    """The newest timestamp the client says it has seen (``If-None-Match``,
    ``_since``, ``_before``, ``_to``): a read replica older than it must not answer."""
    sent = [req.headers.get("If-None-Match")]
    sent += [req.args.get(name) for name in ("_since", "_before", "_to")]
    texts = [value.strip().strip('"') for value in sent if value]
    numbers = [int(text) for text in texts if _is_timestamp_text(text)]
    return max(numbers, default=None)


def _attempt(
    mount: _Mount,
    endpoint: str,
    path: dict[str, str],
    context: RequestContext,
    payload: dict[str, Any],
    models: list[_Touched],
) -> Response:
    """One try of a resource request inside its unit of work."""
    registration, config, storage = mount.registration, mount.config, mount.storage
    method = request.method
    resource = registration.cls()
    access = Access(
        rules=_rules(mount),
        backend=mount.state.permission,
        principals=context.principals,
        collection_uri=payload["collection_uri"],
    )
    model = Model(
        storage=storage,
        resource_name=registration.name,
        parent_id=resource.get_parent_id(context),
        schema=registration.schema,
        id_generator=registration.id_generator,
        id_pattern=registration.id_generator.pattern,
        unique_fields=mount.unique_fields,
        readonly_fields=mount.readonly_fields,
        process_record=resource.process_record,
    )
    call = _Call(registration, model, access, config, context.user_id)
    models.append((registration, model, payload))
    try:
        _check_parents(mount.parents, registration, path, storage, access)
        authorize = mount.state.authorizer
        if authorize is not None:
            authorize(
                Authorization(
                    resource_name=registration.name,
                    endpoint=endpoint,
                    method=method,
                    object_id=path.get("id"),
                    parent_id=model.parent_id,
                    context=context,
                )
            )
        if endpoint == "collection":
            return _collection(call, method)
        return _record(call, method, path["id"])
    except NotModified as exc:
        response = _NotModifiedResponse(status=304)
        _timestamp_headers(response, exc.timestamp)
        return response
    except QueryError as exc:
        raise HTTPError(
            400,
            ERRORS.INVALID_PARAMETERS,
            str(exc),
            details=[{"location": "querystring", "name": exc.name, "description": exc.description}],
        ) from None


def _principal_setting(value: Any) -> frozenset[str] | None:
    """A ``<resource>.<perm>_principals`` value: a list, or Cliquet's comma-separated string."""
    if isinstance(value, str):
        return frozenset(p for p in re.split(r"[\s,]+", value) if p)
    if isinstance(value, list) and all(isinstance(p, str) for p in value):
        return frozenset(value)
    return None


def check_permission_settings(config: Configuration, name: str) -> None:
    """Fail at startup on a ``<name>.<perm>_principals`` setting that is not a list."""
    for permission in PERMISSION_SETTINGS:
        key = f"{name}.{permission}_principals"
        value = config.get(key)
        if value is not None and _principal_setting(value) is None:
            raise ConfigError(
                f'Config key {key!r} must be a list of principals, like ["system.Authenticated"].'
            )


def _rules(mount: _Mount) -> AccessRules:
    registration = mount.registration
    granted: dict[str, frozenset[str]] = {}
    for permission in PERMISSION_SETTINGS:
        value = mount.config.get(f"{registration.name}.{permission}_principals")
        if value is not None:
            # A value a reload made unreadable grants nothing.
            granted[permission] = _principal_setting(value) or frozenset()
    return AccessRules(
        registration.name,
        registration.cls.kind,
        granted,
        mount.record_permissions,
    )


def _record_permissions(
    parents: Mapping[str, _Parent | None], registration: Registration
) -> frozenset[str]:
    """``read``, ``write`` and ``<child>:create`` for each resource nested below."""
    children = [
        name
        for name, parent in parents.items()
        if parent is not None and parent.registration is registration
    ]
    return frozenset({"read", "write", *(f"{child}:create" for child in children)})


def _payload(
    registration: Registration, path: dict[str, str], uri: str, user_id: str | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "resource_name": registration.name,
        "user_id": user_id,
        "uri": uri,
        "collection_uri": uri.rsplit("/", 1)[0] if "id" in path else uri,
    }
    for key, value in path.items():
        payload[f"{registration.name}_id" if key == "id" else key] = value
    return payload


def _check_enabled(
    registration: Registration, endpoint: str, method: str, config: Configuration
) -> None:
    verb = "get" if method == "HEAD" else method.lower()
    if config.get(f"{registration.name}.{endpoint}_{verb}_enabled", True) is False:
        raise HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, "Method not allowed on this endpoint.")
    if method in WRITE_METHODS and config.setting("readonly"):
        raise HTTPError(
            405,
            ERRORS.METHOD_NOT_ALLOWED,
            "This service is read-only: only GET and HEAD are allowed.",
        )


def _check_accept(req: Request) -> None:
    raw = req.headers.get("Accept")
    if not raw or raw in ("*/*", "application/json"):
        return  # the common cases, without parsing the header
    if not req.accept_mimetypes.best_match(["application/json"]):
        raise HTTPError(
            406,
            ERRORS.INVALID_PARAMETERS,
            "Accept header should be one of ['application/json'].",
        )


def _require(allowed: bool, access: Access, message: str | None = None) -> None:
    if not allowed:
        raise denied(access.principals, message)


def _scope(call: _Call, permission: str) -> None:
    """Narrow a collection read or delete to the records the caller may touch."""
    access = call.access
    if access.may_collection(permission):
        return
    _require(access.shareable, access)
    ids = access.accessible_ids(permission)
    # Someone who may create here may list the (maybe empty) part they can read.
    _require(bool(ids) or (permission == "read" and access.may_collection("create")), access)
    call.model.scope = (Filter(ID_FIELD, ids, Operator.IN),)


def _shown_permissions(call: _Call, object_id: str) -> dict[str, list[str]] | None:
    return call.access.record_permissions(object_id) if call.access.shareable else None


def _collection(call: _Call, method: str) -> Response:
    registration, model, access, config = call.registration, call.model, call.access, call.config
    preconditions = _preconditions()
    if method == "POST":
        _require(access.may_collection("create"), access)
        body = _json_body((JSON,))
        data, permissions = _envelope_data(body, call)
        record, created = model.create(data, preconditions)
        object_id = record[ID_FIELD]
        if not created:
            _require(
                access.may_record("read", object_id),
                access,
                "A record with this id exists and this user may not read it.",
            )
        elif access.shareable:
            access.write_permissions(object_id, permissions, call.user_id, reset=True)
        return _record_response(
            record, 201 if created else 200, permissions=_shown_permissions(call, object_id)
        )
    query = _query(registration, config)
    if method == "DELETE":
        _scope(call, "write")
        tombstones = model.delete_all(query, preconditions)
        if access.shareable:
            access.delete_permissions(tombstone[ID_FIELD] for tombstone in tombstones)
        response = json_response({"data": tombstones})
        _timestamp_headers(response, model.timestamp())
        return response
    _scope(call, "read")
    head = method == "HEAD"
    counting = head or config.setting("paginate.count_on_get")
    # One snapshot: the ETag, the records and the count describe the same state.
    with model.storage.snapshot():
        page = model.page(query, preconditions)
        total = model.count(query) if counting else None
    records = page.records
    if query.fields is not None:
        records = [select_fields(record, query.fields) for record in records]
    response = json_response({} if head else {"data": records})
    _timestamp_headers(response, page.timestamp)
    if total is not None:
        response.headers["Total-Records"] = str(total)
    if query.deprecated:
        response.headers["Alert"] = orjson.dumps(
            {
                "code": "soft-eol",
                "message": "_to is deprecated; use _before instead.",
                "url": config.setting("project.docs") or None,
            }
        ).decode()
    if page.next_token is not None:
        response.headers["Next-Page"] = _next_page_url(page.next_token, query)
    _cache_headers(response, registration, config)
    return response


def _record(call: _Call, method: str, object_id: str) -> Response:
    registration, model, access, config = call.registration, call.model, call.access, call.config
    preconditions = _preconditions()
    if method in ("GET", "HEAD"):
        _require(access.may_record("read", object_id), access)
        fields = _query_fields(registration, config)
        record = model.get(object_id, preconditions)
        data = select_fields(record, fields) if fields is not None else record
        response = _record_response(
            data,
            200,
            timestamp=record[MODIFIED_FIELD],
            permissions=_shown_permissions(call, object_id),
        )
        _cache_headers(response, registration, config)
        return response
    if method == "PUT":
        model.check_id(object_id)
        creating = model.find(object_id) is None
        _require(
            access.may_collection("create") if creating else access.may_record("write", object_id),
            access,
        )
        body = _json_body((JSON,))
        data, permissions = _envelope_data(body, call)
        record, created = model.replace(object_id, data, preconditions)
        if creating and not created:
            # Created meanwhile by another request: this one replaced it, so
            # it needs write on it after all (else its unit of work rolls back).
            _require(access.may_record("write", object_id), access)
        if access.shareable:
            access.write_permissions(object_id, permissions, call.user_id, reset=True)
        return _record_response(
            record, 201 if created else 200, permissions=_shown_permissions(call, object_id)
        )
    _require(access.may_record("write", object_id), access)
    if method == "PATCH":
        return _patch(call, object_id, preconditions)
    last_modified = _forced_timestamp()
    tombstone = model.delete(object_id, preconditions, last_modified)
    if access.shareable:
        access.delete_permissions([object_id])
    return _record_response(tombstone, 200)


def _patch(call: _Call, object_id: str, preconditions: Preconditions) -> Response:
    model, access = call.model, call.access
    behavior = request.headers.get("Response-Behavior", "full").strip().lower()
    if behavior not in BEHAVIORS:
        raise invalid_parameter(
            "header", "Response-Behavior", f"must be one of {', '.join(BEHAVIORS)}."
        )
    media_type = request.mimetype
    body = _json_body(PATCH_TYPES)
    permissions: dict[str, set[str]] | None = None
    if media_type == JSON_PATCH:
        if access.shareable and isinstance(body, list):
            body, permissions = _permission_operations(call, object_id, body)
        record, old = model.patch(object_id, body, media_type, preconditions)
        # Operations carry no record: take what the patch changed as "sent",
        # so ``light`` answers the changed fields (and ``diff`` nothing).
        sent = {k: v for k, v in record.items() if k not in RESERVED_FIELDS and old.get(k) != v}
    else:
        sent, permissions = _envelope_data(body, call, required=True)
        record, old = model.patch(object_id, sent, media_type, preconditions)
    if access.shareable:
        access.write_permissions(object_id, permissions, call.user_id, reset=False)
    data = response_data(behavior, record, sent, old)
    return _record_response(
        data,
        200,
        timestamp=record[MODIFIED_FIELD],
        permissions=_shown_permissions(call, object_id),
    )


def _permission_operations(
    call: _Call, object_id: str, operations: list[Any]
) -> tuple[list[Any], dict[str, set[str]] | None]:
    """Split a JSON Patch: the ``/data`` operations, for the model, and the
    permissions the ``/permissions`` ones make (``None`` without any)."""
    mine = [op for op in operations if _on_permissions(op)]
    if not mine:
        return operations, None
    if any(
        isinstance(op.get("from"), str) and not _on_permissions({"path": op["from"]}) for op in mine
    ):
        raise invalid_parameter("body", "body", "An operation cannot move values into permissions.")
    current = call.access.record_permissions(object_id)
    try:
        patched = jsonpatch.apply_patch({"permissions": current}, mine)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise invalid_parameter("body", "body", f"The JSON Patch does not apply: {exc}") from None
    permissions = parse_permissions(
        patched.get("permissions"), call.access.rules.record_permissions
    )
    return [op for op in operations if not _on_permissions(op)], permissions


def _on_permissions(operation: Any) -> bool:
    path = operation.get("path") if isinstance(operation, dict) else None
    return isinstance(path, str) and (path == "/permissions" or path.startswith("/permissions/"))


# --------------------------------------------------------------------------
# Request parsing
# --------------------------------------------------------------------------


def _query(registration: Registration, config: Configuration) -> Query:
    return parse_query(
        request.args.items(multi=True),
        is_known_field=registration.schema.is_known_field,
        max_limit=int(config.setting("paginate.max_limit")),
        default_limit=config.setting("paginate.by"),
    )


def _query_fields(registration: Registration, config: Configuration) -> tuple[str, ...] | None:
    raw = request.args.get("_fields")
    if raw is None:
        return None
    return parse_query([("_fields", raw)], is_known_field=registration.schema.is_known_field).fields


def _precondition(name: str, allow_star: bool) -> int | str | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    value = raw.strip()
    if allow_star and value == "*":
        return "*"
    digits = value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"' and _is_timestamp_text(digits):
        return int(digits)
    raise invalid_parameter(
        "header", name, "Invalid value; it should be an integer between double quotes."
    )


def _preconditions() -> Preconditions:
    if_match = _precondition("If-Match", allow_star=False)
    return Preconditions(
        if_match=if_match if isinstance(if_match, int) else None,
        if_none_match=_precondition("If-None-Match", allow_star=True),
    )


def _forced_timestamp() -> int | None:
    raw = request.args.get("last_modified")
    if raw is None:
        return None
    text = raw.strip().strip('"')
    if not (_is_timestamp_text(text) and _valid_timestamp(int(text))):
        raise invalid_parameter(
            "querystring",
            "last_modified",
            f"must be an integer timestamp between 0 and {MAX_TIMESTAMP} (milliseconds).",
        )
    return int(text)


def _is_timestamp_text(text: str) -> bool:
    """ASCII digits only (``"²".isdigit()`` is true), and few enough for a timestamp."""
    return text.isascii() and text.isdigit() and len(text) < 20


def _valid_timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def _json_body(media_types: tuple[str, ...]) -> Any:
    if request.mimetype not in media_types:
        raise HTTPError(
            415,
            ERRORS.INVALID_PARAMETERS,
            f"Content-Type header should be one of {list(media_types)}.",
        )
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_parameter("body", "body", f"Invalid JSON request body: {exc}") from None
    if json_too_deep(body):
        raise invalid_parameter(
            "body", "body", f"JSON nesting is limited to {MAX_JSON_DEPTH} levels."
        )
    # Cheap test first: a NUL can only arrive as the escape \u0000.
    if b"\\u0000" in raw and _holds_nul(body):
        raise invalid_parameter(
            "body", "body", "Strings cannot contain the NUL character (U+0000); remove it."
        )
    return body


def _holds_nul(value: Any) -> bool:
    """Whether a string (key or value) in ``value`` contains U+0000, which
    PostgreSQL cannot store in JSON: refused on every backend alike."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _envelope_data(
    body: Any, call: _Call, *, required: bool = False
) -> tuple[Any, dict[str, set[str]] | None]:
    """``(data, permissions)`` of a request body; ``permissions`` only on
    shareable resources (``None`` when absent)."""
    if not isinstance(body, dict):
        raise invalid_parameter(
            "body", "body", 'The body must be a JSON object like {"data": {...}}.'
        )
    allowed = ("data", "permissions") if call.access.shareable else ("data",)
    for key in body:
        if key not in allowed:
            raise invalid_parameter("body", key, f"{key} is not allowed.")
    permissions = None
    if "permissions" in body:
        permissions = parse_permissions(body["permissions"], call.access.rules.record_permissions)
    if "data" not in body:
        if required and permissions is None:
            raise invalid_parameter("body", "data", "data is required.")
        return {}, permissions
    data = body["data"]
    if not isinstance(data, dict):
        raise invalid_parameter("body", "data", "data must be a JSON object.")
    if MODIFIED_FIELD in data and not _valid_timestamp(data[MODIFIED_FIELD]):
        raise invalid_parameter(
            "body",
            "data.last_modified",
            f"must be an integer timestamp between 0 and {MAX_TIMESTAMP} (milliseconds).",
        )
    if ID_FIELD in data and not isinstance(data[ID_FIELD], str):
        raise invalid_parameter("body", "data.id", "Invalid record id.")
    return data, permissions


# --------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------


class _NotModifiedResponse(Response):
    """A 304 that keeps ``Last-Modified`` (werkzeug drops it with the entity headers).

    The protocol's 304 carries the current ``ETag`` and ``Last-Modified``.
    """

    def get_wsgi_headers(self, environ: Any) -> Any:
        headers = super().get_wsgi_headers(environ)
        headers["Last-Modified"] = self.headers["Last-Modified"]
        return headers


def _record_response(
    record: dict[str, Any],
    status: int,
    timestamp: int | None = None,
    permissions: dict[str, list[str]] | None = None,
) -> Response:
    body: dict[str, Any] = {"data": record}
    if permissions is not None:
        body["permissions"] = permissions
    response = json_response(body, status)
    _timestamp_headers(response, record[MODIFIED_FIELD] if timestamp is None else timestamp)
    return response


def _timestamp_headers(response: Response, timestamp: int) -> None:
    response.headers["ETag"] = f'"{timestamp}"'
    response.headers["Last-Modified"] = email.utils.formatdate(timestamp / 1000, usegmt=True)


def _next_page_url(token: str, query: Query) -> str:
    params = [
        (name, value)
        for name, value in request.args.items(multi=True)
        if name not in ("_token", "_limit")
    ]
    params += [("_limit", str(query.limit)), ("_token", token)]
    return absolute_url(request.path) + "?" + urlencode(params)


def _cache_headers(response: Response, registration: Registration, config: Configuration) -> None:
    """``<resource>.cache_expires_seconds`` for anonymous reads; else ``no-cache``."""
    expires = config.get(f"{registration.name}.cache_expires_seconds")
    anonymous = current_identity() is None
    if anonymous and isinstance(expires, int) and not isinstance(expires, bool) and expires >= 0:
        response.headers["Cache-Control"] = f"max-age={expires}"
        response.headers["Expires"] = email.utils.formatdate(time.time() + expires, usegmt=True)
