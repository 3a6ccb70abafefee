"""The collection and record endpoints of a resource, sans-IO.

:class:`Endpoint` is one mounted resource, compiled once: its registration,
backends, parents and the per-config settings it reads (rebuilt when the
configuration is reloaded, never per request). :meth:`Endpoint.handle`
takes a :class:`Request` -- plain values: method, path variables, query
pairs, headers, body bytes, the caller -- and a
:class:`~kiln.resource.unit_of_work.UnitOfWork`, checks and stages the
request's work, and returns a :class:`Reply`. The reply is finished
(:meth:`Reply.finish`: ``ETag`` and ``Last-Modified`` from the timestamps
the flush assigned) once the unit of work committed.

The HTTP side (:mod:`kiln.resource.dispatch` for WSGI, :mod:`kiln.resource.views`
under Flask, :mod:`kiln.resource.batch` for sub-requests) builds requests
and writes replies; nothing here reads a WSGI environ or Flask's request.
"""

from __future__ import annotations

import email.utils
import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jsonpatch
import orjson

from kiln._json import parse_body, parse_value
from kiln.auth import denied
from kiln.config import Configuration, Setting, check_positive, register_setting
from kiln.errors import ERRORS, HTTPError, invalid_parameter
from kiln.exceptions import ConfigError
from kiln.resource import Registration, RequestContext
from kiln.resource.access import (
    PERMISSION_SETTINGS,
    Access,
    AccessRules,
    parse_permissions,
    patch_permissions,
)
from kiln.resource.model import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    Model,
    NotModified,
    Preconditions,
    response_data,
)
from kiln.resource.parents import Parent, check_parents
from kiln.resource.query import (
    ID_FIELD,
    MODIFIED_FIELD,
    PROCESS_TOKEN_KEY,
    RESERVED_FIELDS,
    Query,
    QueryError,
    QueryLimits,
    parse_query,
    select_fields,
    token_key,
)
from kiln.resource.unit_of_work import UnitOfWork
from kiln.storage import (
    MAX_FILTER_VALUES,
    MAX_FILTERS,
    MAX_SORT_FIELDS,
    Filter,
    Operator,
    StorageBase,
)

if TYPE_CHECKING:
    from kiln._state import KilnState
    from kiln.auth import Identity

__all__ = [
    "BEHAVIORS",
    "MAX_TIMESTAMP",
    "WRITE_METHODS",
    "Authorization",
    "Authorizer",
    "Endpoint",
    "Reply",
    "Request",
    "check_permission_settings",
    "http_date",
    "seen_timestamp",
]

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
        "query.max_filters",
        (int,),
        MAX_FILTERS,
        "Most filters in one collection request (`_since`/`_before` count); 400 above.",
        True,
        check_value=check_positive,
    ),
    Setting(
        "query.max_filter_values",
        (int,),
        MAX_FILTER_VALUES,
        "Most values in one `in_`/`exclude_`/`contains_`/`contains_any_` filter; 400 above.",
        True,
        check_value=check_positive,
    ),
    Setting(
        "query.max_sort_fields",
        (int,),
        MAX_SORT_FIELDS,
        "Most fields in `_sort`; 400 above.",
        True,
        check_value=check_positive,
    ),
):
    register_setting(_setting)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PATCH_TYPES = (JSON, MERGE_PATCH, JSON_PATCH)
BEHAVIORS = ("full", "light", "diff")
#: Latest timestamp a client may force (``last_modified``): the end of year
#: 9999 in milliseconds, the last date an HTTP ``Last-Modified`` can carry.
MAX_TIMESTAMP = 253_402_300_799_999


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


@dataclass
class Request:
    """One request on a resource, as plain values.

    ``path`` is the URL path (decoded, with the version prefix);
    ``variables`` the path variables; ``args`` the decoded query pairs, in
    order; ``headers`` a case-insensitive mapping; ``url_root`` the
    absolute URL of the service root (``scheme://host[/script]``), from
    which ``Next-Page`` links are built.
    """

    method: str
    path: str
    variables: dict[str, str]
    args: list[tuple[str, str]]
    headers: Mapping[str, str]
    #: Reads the body (once); may raise 413 (too large).
    read_body: Callable[[], bytes]
    media_type: str | None
    identity: Identity | None
    principals: Sequence[str]
    url_root: str
    #: The body already parsed (a batch sub-request's); else :attr:`body` is parsed.
    parsed_body: Any = field(default=None, repr=False)
    #: ``parsed_body`` is known to hold no U+0000 (the batch's raw body had none).
    parsed_body_checked: bool = False
    _body: bytes | None = field(default=None, repr=False)

    @property
    def user_id(self) -> str | None:
        return self.identity.prefixed_id if self.identity is not None else None

    @property
    def body(self) -> bytes:
        """The request body, read when first asked for."""
        if self._body is None:
            self._body = self.read_body()
        return self._body

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        for key, value in self.args:
            if key == name:
                return value
        return None


@dataclass
class Reply:
    """A response, before it is written: ``body`` is the JSON value (``None``:
    no body), ``headers`` what the endpoint sets.

    ``stamp`` is the record (or tombstone) whose ``last_modified`` gives
    ``ETag`` and ``Last-Modified``, or a callable computing that timestamp:
    both are read by :meth:`finish`, after the flush assigned them.
    """

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    stamp: Mapping[str, Any] | Callable[[], int] | None = None

    def finish(self) -> Reply:
        """Add the timestamp headers; call once the unit of work committed."""
        stamp = self.stamp
        if stamp is not None:
            timestamp = stamp() if callable(stamp) else int(stamp[MODIFIED_FIELD])
            self.headers["ETag"] = f'"{timestamp}"'
            self.headers["Last-Modified"] = http_date(timestamp)
            self.stamp = None
        return self


def http_date(timestamp: int) -> str:
    """An HTTP date (``Last-Modified``) for a timestamp in milliseconds."""
    return _http_date(timestamp // 1000)


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    # Responses of the same second share a date: format it once.
    return email.utils.formatdate(seconds, usegmt=True)


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


@dataclass(frozen=True)
class _Settings:
    """What an endpoint reads from the configuration, for one config tree."""

    disabled: frozenset[tuple[str, str]]
    readonly: bool
    max_limit: int
    default_limit: int | None
    count_on_get: bool
    cache_expires: int | None
    rules: AccessRules
    docs_url: str | None
    max_body_bytes: int
    query_limits: QueryLimits
    token_key: bytes


class Endpoint:
    """One mounted resource: everything its requests need, resolved once."""

    def __init__(
        self,
        state: KilnState,
        registration: Registration,
        parents: Mapping[str, Parent | None],
        record_permissions: frozenset[str],
    ) -> None:
        assert state.storage is not None  # built by create_app for apps with resources
        self.state = state
        self.registration = registration
        self.name = registration.name
        self.storage: StorageBase = state.storage
        self.prefix = state.api_prefix
        self.parents = parents
        self.record_permissions = record_permissions
        self.kind = registration.cls.kind
        self.unique_fields = tuple(registration.cls.unique_fields)
        self.readonly_fields = tuple(registration.cls.readonly_fields)
        self._tree: Any = None
        self._settings: _Settings | None = None
        #: Whether resources are nested below this one: deleting its records cascades.
        self.has_children = any(
            parent is not None and parent.registration is registration
            for parent in parents.values()
        )

    def child_uri(self, resource_name: str, parent_id: str, object_id: str) -> str | None:
        """The URI of a record below this resource's, as its permissions are
        keyed (``None``: a resource this app does not mount)."""
        registration = self.state.resources.get(resource_name)
        if registration is None:
            return None
        segment = registration.collection_path.rstrip("/").rsplit("/", 1)[-1]
        return f"{parent_id}/{segment}/{object_id}"

    # -- settings -----------------------------------------------------------

    def settings(self) -> _Settings:
        """The settings of the current config tree (compiled again after a reload)."""
        config = self.state.config
        tree = config.config
        settings = self._settings
        if settings is None or tree is not self._tree:
            settings = self._settings = self._compile(config)
            self._tree = tree
        return settings

    def _compile(self, config: Configuration) -> _Settings:
        name = self.name
        disabled = set()
        for endpoint in ("collection", "record"):
            for verb in ("get", "post", "put", "patch", "delete"):
                if config.get(f"{name}.{endpoint}_{verb}_enabled", True) is False:
                    disabled.add((endpoint, verb))
        granted: dict[str, frozenset[str]] = {}
        for permission in PERMISSION_SETTINGS:
            value = config.get(f"{name}.{permission}_principals")
            if value is not None:
                # A value a reload made unreadable grants nothing.
                granted[permission] = _principal_setting(value) or frozenset()
        expires = config.get(f"{name}.cache_expires_seconds")
        valid_expires = isinstance(expires, int) and not isinstance(expires, bool) and expires >= 0
        return _Settings(
            disabled=frozenset(disabled),
            readonly=bool(config.setting("readonly")),
            max_limit=int(config.setting("paginate.max_limit")),
            default_limit=config.setting("paginate.by"),
            count_on_get=bool(config.setting("paginate.count_on_get")),
            cache_expires=expires if valid_expires else None,
            rules=AccessRules(name, self.kind, granted, self.record_permissions),
            docs_url=config.setting("project.docs") or None,
            max_body_bytes=config.setting("request.max_body_bytes"),
            query_limits=QueryLimits(
                max_filters=config.setting("query.max_filters"),
                max_filter_values=config.setting("query.max_filter_values"),
                max_sort_fields=config.setting("query.max_sort_fields"),
            ),
            token_key=_token_key(config),
        )

    # -- handling -------------------------------------------------------------

    def check(self, request: Request, endpoint: str) -> None:
        """What is refused before any work: a disabled method, a write on a
        read-only service, an anonymous request on a private resource."""
        settings = self.settings()
        method = request.method
        verb = "get" if method == "HEAD" else method.lower()
        if (endpoint, verb) in settings.disabled:
            raise HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, "Method not allowed on this endpoint.")
        if method in WRITE_METHODS and settings.readonly:
            raise HTTPError(
                405,
                ERRORS.METHOD_NOT_ALLOWED,
                "This service is read-only: only GET and HEAD are allowed.",
            )
        if self.kind == "private" and request.identity is None:
            raise denied(request.principals)

    def payload(self, request: Request) -> dict[str, Any]:
        """The event payload of ``request``."""
        uri = request.path.removeprefix(self.prefix)
        variables = request.variables
        payload: dict[str, Any] = {
            "resource_name": self.name,
            "user_id": request.user_id,
            "uri": uri,
            "collection_uri": uri.rsplit("/", 1)[0] if "id" in variables else uri,
        }
        for key, value in variables.items():
            payload[f"{self.name}_id" if key == "id" else key] = value
        return payload

    def handle(self, request: Request, endpoint: str, unit: UnitOfWork) -> Reply:
        """One try of ``request`` on this resource's ``endpoint``
        (``collection`` or ``record``) inside ``unit``."""
        settings = self.settings()
        registration = self.registration
        payload = self.payload(request)
        context = RequestContext(
            path=dict(request.variables), user_id=request.user_id, principals=request.principals
        )
        resource = registration.cls()
        state = self.state
        access = Access(
            rules=settings.rules,
            backend=state.permission,
            principals=request.principals,
            collection_uri=payload["collection_uri"],
            unit=unit,
        )
        model = Model(
            storage=self.storage,
            resource_name=self.name,
            parent_id=resource.get_parent_id(context),
            schema=registration.schema,
            id_generator=registration.id_generator,
            id_pattern=registration.id_generator.pattern,
            unique_fields=self.unique_fields,
            readonly_fields=self.readonly_fields,
            process_record=resource.process_record,
            unit=unit,
            payload=payload,
            max_record_bytes=settings.max_body_bytes,
            token_key=settings.token_key,
        )
        call = _Call(self, request, settings, model, access)
        try:
            object_id = request.variables.get("id")
            check_parents(
                self.parents,
                registration,
                request.variables,
                request.user_id,
                unit,
                access,
                # The record itself, read with its parents, when its id can be one.
                record=(self.name, model.parent_id, object_id)
                if object_id is not None and model.id_pattern.match(object_id)
                else None,
            )
            authorize = state.authorizer
            if authorize is not None:
                authorize(
                    Authorization(
                        resource_name=self.name,
                        endpoint=endpoint,
                        method=request.method,
                        object_id=request.variables.get("id"),
                        parent_id=model.parent_id,
                        context=context,
                    )
                )
            if endpoint == "collection":
                return call.collection()
            return call.record(request.variables["id"])
        except NotModified as exc:
            timestamp = exc.timestamp
            return Reply(304, None, stamp=lambda: timestamp)
        except QueryError as exc:
            raise HTTPError(
                400,
                ERRORS.INVALID_PARAMETERS,
                str(exc),
                details=[
                    {"location": "querystring", "name": exc.name, "description": exc.description}
                ],
            ) from None


def _token_key(config: Configuration) -> bytes:
    """The key of ``Next-Page`` tokens: from the app's secret (Flask's
    ``SECRET_KEY``, else ``auth.userid_hmac_secret``), so every process of a
    deployment reads the tokens of the others; without either, from the
    storage's URL (shared by those processes, but no secret: set one), or
    this process's own key for the memory backend (whose records die with it)."""
    secrets = (config.get("flask.config.SECRET_KEY"), config.setting("auth.userid_hmac_secret"))
    for secret in secrets:
        if secret and isinstance(secret, str):
            return token_key(secret)
    backend = config.setting("storage.backend")
    if backend == "memory":
        return PROCESS_TOKEN_KEY
    return token_key(f"kiln storage {backend} {config.setting('storage.url')}")


def seen_timestamp(request: Request) -> int | None:
    """The newest timestamp the client says it has seen (``If-None-Match``,
    ``_since``, ``_before``, ``_to``): a read replica older than it must not answer."""
    sent = [request.headers.get("If-None-Match")]
    sent += [request.arg(name) for name in ("_since", "_before", "_to")]
    texts = [value.strip().strip('"') for value in sent if value]
    numbers = [int(text) for text in texts if _is_timestamp_text(text)]
    return max(numbers, default=None)


@dataclass
class _Call:
    """One request on a mounted resource, as the endpoint handlers need it."""

    endpoint: Endpoint
    request: Request
    settings: _Settings
    model: Model
    access: Access

    # -- collection ---------------------------------------------------------

    def collection(self) -> Reply:
        request, model, access, settings = self.request, self.model, self.access, self.settings
        method = request.method
        preconditions = self.preconditions()
        if method == "POST":
            self.require(access.may_collection("create"))
            data, permissions = self.envelope(self.json_body((JSON,)))
            record, created = model.create(data, preconditions)
            object_id = record[ID_FIELD]
            shown = None
            if not created:
                self.require(
                    access.may_record("read", object_id),
                    "A record with this id exists and this user may not read it.",
                )
                shown = self.shown_permissions(object_id)
            elif access.shareable:
                shown = access.write_permissions(
                    object_id, permissions, request.user_id, reset=True
                )
            return _record_reply(record, 201 if created else 200, shown)
        query = self.query()
        if method == "DELETE":
            self.scope("write")
            tombstones = model.delete_all(query, preconditions)
            if not tombstones:
                current = model.timestamp()
                return Reply(200, {"data": tombstones}, stamp=lambda: current)
            self.cascade([tombstone[ID_FIELD] for tombstone in tombstones])
            if access.shareable:
                access.delete_permissions(tombstone[ID_FIELD] for tombstone in tombstones)
            return Reply(
                200,
                {"data": tombstones},
                stamp=lambda: max(tombstone[MODIFIED_FIELD] for tombstone in tombstones),
            )
        self.scope("read")
        head = method == "HEAD"
        counting = head or settings.count_on_get
        total = None
        if counting:
            # One snapshot: the ETag, the records and the count describe the same state.
            with model.snapshot():
                page = model.page(query, preconditions)
                total = model.count(query)
        else:
            page = model.page(query, preconditions)
        records = page.records
        if query.fields is not None:
            records = [select_fields(record, query.fields) for record in records]
        reply = Reply(200, {} if head else {"data": records}, stamp=lambda: page.timestamp)
        headers = reply.headers
        if total is not None:
            headers["Total-Records"] = str(total)
        if query.deprecated:
            headers["Alert"] = orjson.dumps(
                {
                    "code": "soft-eol",
                    "message": "_to is deprecated; use _before instead.",
                    "url": settings.docs_url,
                }
            ).decode()
        if page.next_token is not None:
            headers["Next-Page"] = self.next_page_url(page.next_token, query)
        self.cache_headers(reply)
        return reply

    # -- record -------------------------------------------------------------

    def record(self, object_id: str) -> Reply:
        request, model, access = self.request, self.model, self.access
        method = request.method
        preconditions = self.preconditions()
        if method in ("GET", "HEAD"):
            self.require(access.may_record("read", object_id))
            fields = self.query_fields()
            record = model.get(object_id, preconditions)
            data = select_fields(record, fields) if fields is not None else record
            reply = _record_reply(data, 200, self.shown_permissions(object_id), stamp=record)
            self.cache_headers(reply)
            return reply
        if method == "PUT":
            model.check_id(object_id)
            creating = model.find(object_id) is None
            self.require(
                access.may_collection("create")
                if creating
                else access.may_record("write", object_id)
            )
            data, permissions = self.envelope(self.json_body((JSON,)))
            record, created = model.replace(object_id, data, preconditions)
            shown = None
            if access.shareable:
                # Cliquet/Kinto: a PUT without ``permissions`` keeps the record's.
                shown = access.write_permissions(
                    object_id,
                    permissions,
                    request.user_id,
                    reset=creating or permissions is not None,
                )
            return _record_reply(record, 201 if created else 200, shown)
        self.require(access.may_record("write", object_id))
        if method == "PATCH":
            return self.patch(object_id, preconditions)
        last_modified = self.forced_timestamp()
        tombstone = model.delete(object_id, preconditions, last_modified)
        self.cascade([object_id])
        if access.shareable:
            access.delete_permissions([object_id])
        return _record_reply(tombstone, 200, None)

    def patch(self, object_id: str, preconditions: Preconditions) -> Reply:
        request, model, access = self.request, self.model, self.access
        behavior = (request.headers.get("Response-Behavior") or "full").strip().lower()
        if behavior not in BEHAVIORS:
            raise invalid_parameter(
                "header", "Response-Behavior", f"must be one of {', '.join(BEHAVIORS)}."
            )
        body = self.json_body(PATCH_TYPES)
        media_type = request.media_type
        assert media_type is not None  # json_body refused any other
        permissions: dict[str, set[str]] | None = None
        if media_type == JSON_PATCH:
            if access.shareable and isinstance(body, list):
                body, permissions = self.permission_operations(object_id, body)
            record, old = model.patch(object_id, body, media_type, preconditions)
            # Operations carry no record: take what the patch changed as "sent",
            # so ``light`` answers the changed fields (and ``diff`` nothing).
            sent = {k: v for k, v in record.items() if k not in RESERVED_FIELDS and old.get(k) != v}
        else:
            sent, permissions = self.envelope(body, required=True)
            record, old = model.patch(object_id, sent, media_type, preconditions)
        shown = None
        if access.shareable:
            shown = access.write_permissions(object_id, permissions, request.user_id, reset=False)
        data = response_data(behavior, record, sent, old)
        return _record_reply(data, 200, shown, stamp=record)

    def cascade(self, object_ids: list[str]) -> None:
        """Deleting records deletes what is nested below them, in the same unit
        of work: the records (with tombstones) and their permissions."""
        endpoint, access = self.endpoint, self.access
        if not endpoint.has_children:
            return
        deleted = self.model.delete_descendants([access.record_uri(i) for i in object_ids])
        if access.backend is None or not deleted:
            return
        uris = [endpoint.child_uri(*key) for key in deleted]
        access.delete_objects_permissions([uri for uri in uris if uri is not None])

    def permission_operations(
        self, object_id: str, operations: list[Any]
    ) -> tuple[list[Any], dict[str, set[str]] | None]:
        """Split a JSON Patch: the ``/data`` operations, for the model, and the
        permissions the ``/permissions`` ones make (``None`` without any)."""
        mine = [op for op in operations if _on_permissions(op)]
        if not mine:
            return operations, None
        if any(
            isinstance(op.get("from"), str) and not _on_permissions({"path": op["from"]})
            for op in mine
        ):
            raise invalid_parameter(
                "body", "body", "An operation cannot move values into permissions."
            )
        current = self.access.record_permissions(object_id)
        try:
            patched = patch_permissions(current, mine, self.settings.max_body_bytes)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise invalid_parameter(
                "body", "body", f"The JSON Patch does not apply: {exc}"
            ) from None
        permissions = parse_permissions(patched, self.access.rules.record_permissions)
        return [op for op in operations if not _on_permissions(op)], permissions

    # -- checks ---------------------------------------------------------------

    def require(self, allowed: bool, message: str | None = None) -> None:
        if not allowed:
            raise denied(self.access.principals, message)

    def scope(self, permission: str) -> None:
        """Narrow a collection read or delete to the records the caller may touch."""
        access = self.access
        if access.may_collection(permission):
            return
        self.require(access.shareable)
        ids = access.accessible_ids(permission)
        # Someone who may create here may list or delete the (maybe empty)
        # part they can read or write, as in Kinto: 200 {"data": []}.
        self.require(bool(ids) or access.may_collection("create"))
        self.model.scope = (Filter(ID_FIELD, ids, Operator.IN),)

    def shown_permissions(self, object_id: str) -> dict[str, list[str]] | None:
        return self.access.record_permissions(object_id) if self.access.shareable else None

    # -- request parsing ------------------------------------------------------

    def query(self) -> Query:
        settings = self.settings
        return parse_query(
            self.request.args,
            is_known_field=self.endpoint.registration.schema.is_known_field,
            max_limit=settings.max_limit,
            default_limit=settings.default_limit,
            limits=settings.query_limits,
            token_key=settings.token_key,
        )

    def query_fields(self) -> tuple[str, ...] | None:
        raw = self.request.arg("_fields")
        if raw is None:
            return None
        is_known_field = self.endpoint.registration.schema.is_known_field
        return parse_query([("_fields", raw)], is_known_field=is_known_field).fields

    def precondition(self, name: str, allow_star: bool) -> int | str | None:
        raw = self.request.headers.get(name)
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

    def preconditions(self) -> Preconditions:
        if_match = self.precondition("If-Match", allow_star=False)
        return Preconditions(
            if_match=if_match if isinstance(if_match, int) else None,
            if_none_match=self.precondition("If-None-Match", allow_star=True),
        )

    def forced_timestamp(self) -> int | None:
        raw = self.request.arg("last_modified")
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

    def json_body(self, media_types: tuple[str, ...]) -> Any:
        request = self.request
        if request.parsed_body is not None:
            return parse_value(
                request.parsed_body,
                request.media_type,
                media_types,
                check_nul=not request.parsed_body_checked,
            )
        return parse_body(request.body, request.media_type, media_types, empty={})

    def envelope(
        self, body: Any, *, required: bool = False
    ) -> tuple[Any, dict[str, set[str]] | None]:
        """``(data, permissions)`` of a request body; ``permissions`` only on
        shareable resources (``None`` when absent)."""
        if not isinstance(body, dict):
            raise invalid_parameter(
                "body", "body", 'The body must be a JSON object like {"data": {...}}.'
            )
        access = self.access
        allowed = ("data", "permissions") if access.shareable else ("data",)
        for key in body:
            if key not in allowed:
                raise invalid_parameter("body", key, f"{key} is not allowed.")
        permissions = None
        if "permissions" in body:
            permissions = parse_permissions(body["permissions"], access.rules.record_permissions)
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

    # -- response headers ------------------------------------------------------

    def next_page_url(self, token: str, query: Query) -> str:
        request = self.request
        params = [(name, value) for name, value in request.args if name not in ("_token", "_limit")]
        params += [("_limit", str(query.limit)), ("_token", token)]
        return request.url_root + request.path + "?" + urlencode(params)

    def cache_headers(self, reply: Reply) -> None:
        """``<resource>.cache_expires_seconds`` for anonymous reads; else ``no-cache``."""
        expires = self.settings.cache_expires
        if expires is not None and self.request.identity is None:
            reply.headers["Cache-Control"] = f"max-age={expires}"
            reply.headers["Expires"] = email.utils.formatdate(time.time() + expires, usegmt=True)


def _record_reply(
    record: dict[str, Any],
    status: int,
    permissions: dict[str, list[str]] | None,
    *,
    stamp: Mapping[str, Any] | None = None,
) -> Reply:
    body: dict[str, Any] = {"data": record}
    if permissions is not None:
        body["permissions"] = permissions
    return Reply(status, body, stamp=record if stamp is None else stamp)


def _on_permissions(operation: Any) -> bool:
    path = operation.get("path") if isinstance(operation, dict) else None
    return isinstance(path, str) and (path == "/permissions" or path.startswith("/permissions/"))


def _is_timestamp_text(text: str) -> bool:
    """ASCII digits only (``"²".isdigit()`` is true), and few enough for a timestamp."""
    return text.isascii() and text.isdigit() and len(text) < 20


def _valid_timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP
