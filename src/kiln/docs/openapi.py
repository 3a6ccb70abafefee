"""The OpenAPI 3.1 document of a kiln app.

:func:`build_openapi` describes, from plain values:

- every plain route (Clay's ``@app.route`` views, kiln's utility views)
  from its docstring (:mod:`kiln.docs._docstring`);
- every mounted resource: its record schema (the resource's JSON Schema,
  ARCHITECTURE D7) with the fields kiln adds (``id``, ``last_modified``,
  ``deleted``), its collection and record endpoints with the protocol's
  query parameters (filters, ``_sort``, ``_limit``, ``_token``, ``_fields``,
  ``_since``, ``_before``), precondition headers (``If-Match``,
  ``If-None-Match``) and response headers (``ETag``, ``Last-Modified``,
  ``Next-Page``, ``Total-Records``), PATCH in its three media types;
- the batch endpoint, the JSON error envelope, and the security schemes of
  the authentication policies.

A resource's operations are data: :data:`_OPERATIONS` lists each one
(method, endpoint, parameters, request body, responses, error statuses),
and small builders turn an entry into its OpenAPI Operation Object.

Docstring problems are reported, never raised: each operation lists its
own in ``x-kiln-warnings``, and the document lists them all at the top
level. Sans-IO: the Flask glue in :mod:`kiln.docs` gathers the inputs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from kiln.docs._docstring import Docstring, parse_docstring
from kiln.docs._models import Models
from kiln.resource import Registration

__all__ = [
    "METHOD_ORDER",
    "OPENAPI_VERSION",
    "RECORD_TIMESTAMP",
    "ApiInfo",
    "ResourceEndpoints",
    "Route",
    "build_openapi",
]

OPENAPI_VERSION = "3.1.0"
#: Order of methods in a path item (and in Clay's ``/_docs``).
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
#: Timestamps are signed 64-bit integers in every backend.
MAX_TIMESTAMP = 2**63 - 1
BATCH_METHODS = ("GET", "HEAD", "DELETE", "POST", "PUT", "PATCH")

_RULE_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9]+")
_REF = "#/components/schemas/"

# Components kiln always defines; a resource whose name would collide gets a suffix.
ERROR = "KilnError"
TOMBSTONE = "KilnTombstone"
PERMISSIONS = "KilnPermissions"
BATCH = "KilnBatch"
BATCH_REQUEST = "KilnBatchRequest"
BATCH_RESPONSE = "KilnBatchResponse"
_KILN_SCHEMAS = (ERROR, TOMBSTONE, PERMISSIONS, BATCH, BATCH_REQUEST, BATCH_RESPONSE)


@dataclass(frozen=True)
class Route:
    """A plain URL rule: its werkzeug rule string, endpoint, methods and docstring."""

    rule: str
    endpoint: str
    methods: tuple[str, ...]
    docstring: str | None = None
    #: The view function's ``__name__`` (Clay's ``nickname``).
    name: str = ""


@dataclass(frozen=True)
class ResourceEndpoints:
    """A mounted resource and what it answers once the settings are applied.

    ``collection_methods``/``record_methods`` hold the enabled methods
    (``HEAD`` included when it is served). ``kind`` is ``public``,
    ``private`` (every request authenticated, one collection per user) or
    ``shareable`` (records carry ``permissions`` named ``permissions``).
    """

    registration: Registration
    collection_methods: tuple[str, ...]
    record_methods: tuple[str, ...]
    kind: str = "public"
    permissions: tuple[str, ...] = ("read", "write")


@dataclass(frozen=True)
class ApiInfo:
    """What the document says about the service as a whole."""

    title: str
    version: str
    prefix: str
    description: str = ""
    docs_url: str = ""
    server_url: str = "/"
    batch_max_requests: int | None = None
    batch: bool = True
    security_schemes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


#: Timestamps in filters: any signed 64-bit integer.
_TIMESTAMP = {"type": "integer", "minimum": -MAX_TIMESTAMP, "maximum": MAX_TIMESTAMP}
#: Timestamps a client may give a record (``data.last_modified``, a forced
#: tombstone's ``?last_modified=``): from the epoch to the end of year 9999,
#: which every backend stores and an HTTP date (``Last-Modified``) can show.
RECORD_TIMESTAMP = {"type": "integer", "minimum": 0, "maximum": 253_402_300_799_999}
_ETAG = {"type": "string", "pattern": '^"[0-9]+"$'}

_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "The timestamp of the record (or of the collection on lists), quoted: "
        'use it in `If-Match` and `If-None-Match`, like `"1795318332945"`.',
        "schema": _ETAG,
    },
    "Last-Modified": {
        "description": "The same instant as `ETag`, as an HTTP date.",
        "schema": {"type": "string"},
    },
    "Next-Page": {
        "description": "The absolute URL of the next page (every original parameter plus "
        "`_limit` and `_token`); absent on the last page.",
        "schema": {"type": "string"},
    },
    "Total-Records": {
        "description": "How many records match the filters (tombstones excluded). Sent on "
        "HEAD; on GET only when the setting `paginate.count_on_get` is on.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def _headers(*names: str, required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        name: {**_HEADERS[name], **({"required": True} if name in required else {})}
        for name in names
    }


def _timestamp_headers() -> dict[str, Any]:
    """``ETag`` and ``Last-Modified``: on every successful resource response."""
    return _headers("ETag", "Last-Modified", required=("ETag", "Last-Modified"))


#: Error responses: (component name, status, description).
_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Invalid parameters, headers or body (errno 107); `details` lists each "
        "problem as `{location, name, description}`.",
    ),
    401: (
        "Unauthorized",
        "Authentication is required (errno 104) or the credentials are wrong (errno 105).",
    ),
    403: ("Forbidden", "The authenticated user may not do this (errno 121)."),
    404: (
        "NotFound",
        "No such record (errno 110, `details.id`), no such parent record "
        "(errno 110, `details.resource_name`), or no such URL (errno 111).",
    ),
    405: (
        "MethodNotAllowed",
        "The method is disabled on this endpoint or the service is read-only (errno 115).",
    ),
    406: ("NotAcceptable", "The `Accept` header does not allow `application/json`."),
    409: ("Conflict", "A unique field's value is taken (errno 122, `details: {field, existing}`)."),
    412: (
        "PreconditionFailed",
        "`If-Match` or `If-None-Match` does not hold (errno 114); "
        "on records, `details.existing` is the current record.",
    ),
    413: ("PayloadTooLarge", "The body is larger than `request.max_body_bytes` (errno 113)."),
    415: ("UnsupportedMediaType", "The `Content-Type` is not one this endpoint reads."),
    503: ("ServiceUnavailable", "A backend is down (errno 201); retry after `Retry-After`."),
}


def _error_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {
        "Error": {
            "description": "Any other error, as the JSON error envelope.",
            "content": _json(_ref(ERROR)),
        },
        "NotModified": {
            "description": "Not modified since the `If-None-Match` timestamp (no body).",
            "headers": _timestamp_headers(),
        },
    }
    for status, (name, description) in _ERRORS.items():
        responses[name] = {"description": description, "content": _json(_ref(ERROR))}
        if status == 503:
            responses[name]["headers"] = _headers("Retry-After")
    return responses


def _error_refs(*statuses: int) -> dict[str, Any]:
    rv: dict[str, Any] = {
        str(status): {"$ref": f"#/components/responses/{_ERRORS[status][0]}"} for status in statuses
    }
    rv["default"] = {"$ref": "#/components/responses/Error"}
    return rv


def _kiln_schemas(info: ApiInfo) -> dict[str, Any]:
    request_item: dict[str, Any] = {
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": list(BATCH_METHODS), "default": "GET"},
            "path": {
                "type": "string",
                "pattern": "^/",
                "description": "The path, like `/mushrooms?_limit=5`; the version prefix "
                "is added when missing.",
            },
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Headers of this request; the batch's own headers are "
                "inherited and overridden by these.",
            },
            "body": {
                "anyOf": [{"type": "object"}, {"type": "array", "items": {}}],
                "description": "The request body (a JSON object, or a JSON Patch list).",
            },
        },
        "additionalProperties": False,
    }
    requests: dict[str, Any] = {"type": "array", "minItems": 1, "items": _ref(BATCH_REQUEST)}
    if info.batch_max_requests:
        requests["maxItems"] = info.batch_max_requests
    return {
        ERROR: {
            "type": "object",
            "description": "The error envelope of every error response.",
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status."},
                "errno": {"type": "integer", "description": "kiln's error number."},
                "error": {"type": "string", "description": "The HTTP status' reason."},
                "message": {"type": "string", "description": "What went wrong, for people."},
                "info": {"type": "string", "description": "A link to more information."},
                "details": {
                    "description": "Structured details (validation errors: a list of "
                    "`{location, name, description}`)."
                },
            },
            "required": ["code", "errno", "error"],
        },
        TOMBSTONE: {
            "type": "object",
            "description": "What is left of a deleted record.",
            "properties": {
                "id": {"type": "string"},
                "last_modified": RECORD_TIMESTAMP,
                "deleted": {"type": "boolean", "enum": [True]},
            },
            "required": ["id", "last_modified", "deleted"],
        },
        PERMISSIONS: {
            "type": "object",
            "description": "Who holds each permission on the record: lists of principals "
            "(user ids like `basicauth:1f2e...`, `system.Authenticated`, "
            "`system.Everyone`).",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        BATCH_REQUEST: request_item,
        BATCH: {
            "type": "object",
            "properties": {
                "defaults": {
                    **request_item,
                    "description": "Deep-merged into every request.",
                },
                "requests": requests,
            },
            "required": ["requests"],
            "additionalProperties": False,
        },
        BATCH_RESPONSE: {
            "type": "object",
            "properties": {
                "responses": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "integer"},
                            "path": {"type": "string"},
                            "headers": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "body": {"description": "The JSON body (a string when not JSON)."},
                        },
                        "required": ["status", "path", "headers", "body"],
                    },
                }
            },
            "required": ["responses"],
        },
    }


def _common_parameters() -> dict[str, Any]:
    return {
        "Limit": {
            "name": "_limit",
            "in": "query",
            "description": "Page size; capped by the setting `paginate.max_limit` (pages "
            "continue past it through `Next-Page`).",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TIMESTAMP},
        },
        "Token": {
            "name": "_token",
            "in": "query",
            "description": "Continue from a `Next-Page` link (opaque; bound to the "
            "collection, filters and sort it was issued for).",
            "schema": {"type": "string"},
        },
        "Since": {
            "name": "_since",
            "in": "query",
            "description": "Only records changed after this timestamp, deletions "
            "(tombstones) included: the change feed.",
            "schema": _TIMESTAMP,
        },
        "Before": {
            "name": "_before",
            "in": "query",
            "description": "Only records changed before this timestamp, tombstones included.",
            "schema": _TIMESTAMP,
        },
        "To": {
            "name": "_to",
            "in": "query",
            "description": "Deprecated: use `_before`.",
            "deprecated": True,
            "schema": _TIMESTAMP,
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "description": 'Only if the current timestamp is this one (`"<timestamp>"`, '
            "from an `ETag`); checked atomically with a write. 412 otherwise.",
            "schema": _ETAG,
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "description": 'On reads, `"<timestamp>"`: 304 when nothing changed since, '
            "`*`: 304 when the record exists. On creates, `*`: 412 when the record exists.",
            "schema": {"type": "string", "pattern": '^(\\*|"[0-9]+")$'},
        },
        "ResponseBehavior": {
            "name": "Response-Behavior",
            "in": "header",
            "description": "`full` (default): the record; `light`: the fields sent; `diff`: "
            "the fields sent whose stored value differs.",
            "schema": {"type": "string", "enum": ["full", "light", "diff"]},
        },
    }


def _parameter_refs(*names: str) -> list[dict[str, str]]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


# --------------------------------------------------------------------------
# Resource schemas
# --------------------------------------------------------------------------

_SUBSCHEMA = frozenset(
    {"additionalProperties", "contains", "not", "if", "then", "else", "items", "propertyNames"}
    | {"unevaluatedItems", "unevaluatedProperties", "additionalItems"}
)
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
#: Keywords that make a response fail when ``_fields`` or ``Response-Behavior`` trims it.
_COMPLETENESS = ("required", "dependentRequired", "minProperties", "dependencies")


def _relocate(node: Any, component: str, *, partial: bool) -> Any:
    """``node`` with ``#`` references pointing into ``component``; ``partial`` drops
    every keyword that asks for fields to be present."""
    if not isinstance(node, Mapping):
        return node  # a boolean schema
    rv: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            rv[key] = _REF + component + value[1:]
        elif key == "$id" or (partial and key in _COMPLETENESS):
            continue
        elif key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            rv[key] = {
                name: _relocate(sub, component, partial=partial) for name, sub in value.items()
            }
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            rv[key] = [_relocate(sub, component, partial=partial) for sub in value]
        elif key in _SUBSCHEMA:
            rv[key] = _relocate(value, component, partial=partial)
        else:
            rv[key] = copy.deepcopy(value)
    return rv


def _camel(name: str) -> str:
    rv = "".join(part[:1].upper() + part[1:] for part in _NOT_IDENTIFIER.split(name) if part)
    return rv or "Resource"


@dataclass(frozen=True)
class _Names:
    record: str
    fields: str
    input: str
    changes: str
    patch: str


def _resource_names(name: str, taken: set[str]) -> _Names:
    def derived(base: str) -> _Names:
        return _Names(base, f"{base}Fields", f"{base}Input", f"{base}Changes", f"{base}Patch")

    names = derived(_camel(name))
    while taken.intersection(vars(names).values()) or names.record in _KILN_SCHEMAS:
        names = derived(names.record + "Resource")
    taken.update(vars(names).values())
    return names


def _resource_schemas(resource: ResourceEndpoints, names: _Names) -> dict[str, Any]:
    registration = resource.registration
    declared = registration.schema.json_schema
    base: dict[str, Any] = dict(declared) if declared is not None else {"type": "object"}
    id_schema = {"type": "string", "pattern": registration.id_generator.regexp}
    described = registration.cls.__doc__

    def variant(component: str, *, partial: bool, response: bool) -> dict[str, Any]:
        schema: dict[str, Any] = _relocate(base, component, partial=partial)
        properties = dict(schema.get("properties", {}))
        properties["id"] = {**id_schema, "description": "Assigned by kiln unless given."}
        properties["last_modified"] = {
            **RECORD_TIMESTAMP,
            "description": "When the record last changed (milliseconds since the epoch).",
        }
        if response:
            properties["deleted"] = {
                "type": "boolean",
                "enum": [True],
                "description": "Only on tombstones.",
            }
        schema["properties"] = properties
        if described and "description" not in schema:
            schema["description"] = described.strip()
        return schema

    record = variant(names.record, partial=True, response=True)
    record["required"] = ["id", "last_modified"]
    return {
        names.record: record,
        names.fields: variant(names.fields, partial=True, response=True),
        names.input: variant(names.input, partial=False, response=False),
        names.changes: _without_top_required(variant(names.changes, partial=False, response=False)),
        names.patch: _body(names.changes, resource, required=True),
    }


def _without_top_required(schema: dict[str, Any]) -> dict[str, Any]:
    schema.pop("required", None)
    return schema


# --------------------------------------------------------------------------
# Resource parameters
# --------------------------------------------------------------------------


def _field_type(schema: Any) -> str | None:
    if not isinstance(schema, Mapping):
        return None
    declared = schema.get("type")
    if isinstance(declared, list):
        types = [t for t in declared if t != "null"]
        declared = types[0] if len(types) == 1 else None
    return declared if isinstance(declared, str) else None


def _value_schema(kind: str | None) -> dict[str, Any]:
    if kind in ("integer", "number", "boolean", "string"):
        return {"type": kind}
    return {"type": "string"}


def _query(name: str, schema: Mapping[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": dict(schema),
        **extra,
    }


def _filter_parameters(
    field_name: str, kind: str | None, *, reserved: bool
) -> list[dict[str, Any]]:
    """The filters kiln offers on one field, typed by the field's JSON Schema type."""
    value = _TIMESTAMP if field_name == "last_modified" else _value_schema(kind)
    listed = {"type": "array", "items": value}
    rv: list[dict[str, Any]] = []
    if kind not in ("array", "object"):
        rv += [
            _query(
                field_name,
                value,
                f'`{field_name}` equals (JSON-decoded: `3` is a number, `"3"` a string).',
            ),
            _query(f"not_{field_name}", value, f"`{field_name}` differs, or is absent."),
            _query(
                f"in_{field_name}",
                listed,
                f"`{field_name}` is one of these (`a,b` or a JSON list).",
                explode=False,
            ),
            _query(
                f"exclude_{field_name}",
                listed,
                f"`{field_name}` is none of these, or is absent.",
                explode=False,
            ),
        ]
    if kind in (None, "integer", "number", "string"):
        for prefix, meaning in (("min", ">="), ("max", "<="), ("gt", ">"), ("lt", "<")):
            rv.append(
                _query(
                    f"{prefix}_{field_name}",
                    value,
                    f"`{field_name}` {meaning} this (numbers with numbers, strings with strings).",
                )
            )
    if kind in (None, "string"):
        rv.append(
            _query(
                f"like_{field_name}",
                {"type": "string"},
                f"`{field_name}` matches, "
                "case-insensitively; `*` is a wildcard (without one: contains).",
            )
        )
    if kind in (None, "array"):
        items = {"type": "array", "items": {}}
        for prefix, meaning in (("contains", "every"), ("contains_any", "at least one")):
            rv.append(
                {
                    "name": f"{prefix}_{field_name}",
                    "in": "query",
                    "description": f"`{field_name}` is an array holding {meaning} value of "
                    "this JSON array.",
                    "content": _json(items),
                }
            )
    if not reserved:
        rv.append(
            _query(
                f"has_{field_name}",
                {"type": "boolean"},
                f"`{field_name}` is present (`false`: absent).",
            )
        )
    return rv


def _any_field(resource: ResourceEndpoints) -> bool:
    """Whether filters, ``_sort`` and ``_fields`` may name undeclared fields."""
    schema = resource.registration.schema
    return schema.allows_unknown or bool(schema.patterns)


def _field_names(resource: ResourceEndpoints) -> list[tuple[str, str | None]]:
    declared = (resource.registration.schema.json_schema or {}).get("properties", {})
    return [
        (name, _field_type(sub))
        for name, sub in sorted(declared.items())
        if name not in ("id", "last_modified", "deleted")
    ]


def _filters(resource: ResourceEndpoints) -> list[dict[str, Any]]:
    """Every filter of the collection: typed ones per declared field, then the rest."""
    parameters: list[dict[str, Any]] = []
    parameters += _filter_parameters("id", "string", reserved=True)
    parameters += _filter_parameters("last_modified", "integer", reserved=True)
    for name, kind in _field_names(resource):
        parameters += _filter_parameters(name, kind, reserved=False)
    if _any_field(resource):
        parameters.append(
            {
                "name": "filters",
                "in": "query",
                "description": "Filters on any other field, with the same prefixes "
                "(`not_`, `min_`, `max_`, `gt_`, `lt_`, `in_`, `exclude_`, `has_`, `like_`, "
                "`contains_`, `contains_any_`) and dotted sub-fields (`author.name=Ada`).",
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        )
    return parameters


def _sortable(resource: ResourceEndpoints) -> list[str]:
    return ["id", "last_modified", *(name for name, _ in _field_names(resource))]


def _sort_parameter(resource: ResourceEndpoints) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string"}
    if not _any_field(resource):
        items["enum"] = [sign + name for name in _sortable(resource) for sign in ("", "-")]
    return _query(
        "_sort",
        {"type": "array", "items": items},
        "Sort by these fields (`-` for descending); kiln appends `-last_modified,id`. "
        "Dotted sub-fields are allowed.",
        explode=False,
    )


def _fields_parameter(resource: ResourceEndpoints) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string"}
    if not _any_field(resource):
        items["enum"] = _sortable(resource)
    return _query(
        "_fields",
        {"type": "array", "items": items},
        "Only these fields (dotted sub-fields allowed), plus `id` and `last_modified`.",
        explode=False,
    )


def _path_parameters(path: str, id_pattern: str | None) -> list[dict[str, Any]]:
    rv = []
    for match in _RULE_VARIABLE.finditer(path):
        name = match["name"]
        schema: dict[str, Any] = {"type": "string"}
        if name == "id" and id_pattern:
            schema["pattern"] = id_pattern
        rv.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": "The record's id." if name == "id" else f"The parent's `{name}`.",
                "schema": schema,
            }
        )
    return rv


def _openapi_path(rule: str) -> str:
    return _RULE_VARIABLE.sub(lambda m: "{" + m["name"] + "}", rule)


# --------------------------------------------------------------------------
# Resource operations
# --------------------------------------------------------------------------


def _body(schema_name: str, resource: ResourceEndpoints, *, required: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "object",
        "properties": {"data": _ref(schema_name)},
        "additionalProperties": False,
    }
    if resource.kind == "shareable":
        body["properties"]["permissions"] = _ref(PERMISSIONS)
    if required:
        body["required"] = ["data"]
    return body


#: A JSON Patch (RFC 6902) document: what ``application/json-patch+json`` reads.
_JSON_PATCH = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "op": {
                "type": "string",
                "enum": ["add", "remove", "replace", "move", "copy", "test"],
            },
            "path": {"type": "string", "pattern": "^/"},
            "from": {"type": "string"},
            "value": {},
        },
        "required": ["op", "path"],
    },
}

_TIMESTAMP_HEADERS = ("ETag", "Last-Modified")
_LIST_HEADERS = ("ETag", "Last-Modified", "Next-Page", "Total-Records")
#: In an operation's error statuses: 401 and 403, when the service authenticates.
_AUTH = "auth"
#: In an operation's error statuses: 404, when the resource is nested (a parent may be missing).
_PARENT = "parent"


@dataclass(frozen=True)
class _Response:
    """A success response of a resource operation.

    ``data`` names the schema under ``data``: ``record`` or ``fields`` (the
    resource's, with its ``permissions`` on shareable resources),
    ``tombstone``, or ``None`` for no body; ``many`` makes it a list.
    ``ref`` points at a shared response instead (``NotModified``).
    """

    status: str
    description: str = ""
    headers: tuple[str, ...] = _TIMESTAMP_HEADERS
    data: str | None = None
    many: bool = False
    ref: str | None = None


_NOT_MODIFIED = _Response("304", ref="NotModified")


@dataclass(frozen=True)
class _Operation:
    """One operation of a resource endpoint, as data.

    ``summary`` and ``description`` are templates (``{name}``, ``{plural}``,
    ``{permissions}``). ``parameters`` name components (``IfMatch``) or the
    resource's own parameters (:data:`_RESOURCE_PARAMETERS`). ``body`` is the
    request body: ``input`` (the record) or ``changes`` (the three PATCH media
    types). ``errors`` lists error statuses, with :data:`_AUTH` and
    :data:`_PARENT` standing for those that depend on the service.
    """

    endpoint: str  # "collection" or "record"
    method: str
    suffix: str  # of the operationId: ``<resource name>_<suffix>``
    summary: str
    parameters: tuple[str, ...]
    responses: tuple[_Response, ...]
    errors: tuple[int | str, ...]
    description: str | None = None
    body: str | None = None


_LIST_PARAMETERS = ("filters", "_sort", "_fields", "Limit", "Token", "Since", "Before", "To")
_PRECONDITIONS = ("IfMatch", "IfNoneMatch")

#: Every operation kiln serves on a resource, in the order of the document.
_OPERATIONS = (
    _Operation(
        "collection",
        "GET",
        "list",
        summary="List {plural}",
        description="Filter, sort and page through the collection. With `_since` or "
        "`_before` (or any filter on `last_modified`) tombstones of deleted records are "
        "included: that is the change feed a client syncs from.",
        parameters=(*_LIST_PARAMETERS, *_PRECONDITIONS),
        responses=(
            _Response("200", "A page of records.", _LIST_HEADERS, "record", many=True),
            _NOT_MODIFIED,
        ),
        errors=(400, _AUTH, _PARENT, 406, 412, 503),
    ),
    _Operation(
        "collection",
        "HEAD",
        "count",
        summary="Count {plural}",
        description="The headers of the list, with `Total-Records`, and no body.",
        parameters=(*_LIST_PARAMETERS, *_PRECONDITIONS),
        responses=(_Response("200", "The list's headers.", _LIST_HEADERS), _NOT_MODIFIED),
        errors=(400, _AUTH, _PARENT, 406, 412, 503),
    ),
    _Operation(
        "collection",
        "POST",
        "create",
        summary="Create a {name}",
        description="Create a record; `id` is generated unless the body gives one. When "
        "the id (or a unique field's value) exists, answers 200 with the existing record.",
        parameters=_PRECONDITIONS,
        responses=(
            _Response("201", "Created.", data="record"),
            _Response("200", "The record existed already.", data="record"),
        ),
        errors=(400, _AUTH, _PARENT, 406, 409, 412, 413, 415, 503),
        body="input",
    ),
    _Operation(
        "collection",
        "DELETE",
        "delete_all",
        summary="Delete {plural}",
        description="Delete every record matching the filters; answers their tombstones.",
        parameters=("filters", "Since", "Before", "IfMatch"),
        responses=(
            _Response("200", "The tombstones of the deleted records.", data="tombstone", many=True),
        ),
        errors=(400, _AUTH, _PARENT, 406, 412, 503),
    ),
    _Operation(
        "record",
        "GET",
        "get",
        summary="Get a {name}",
        parameters=("_fields", *_PRECONDITIONS),
        responses=(_Response("200", "The record.", data="record"), _NOT_MODIFIED),
        errors=(400, _AUTH, 404, 406, 412, 503),
    ),
    _Operation(
        "record",
        "HEAD",
        "check",
        summary="Check a {name}",
        description="The record's headers (`ETag`), no body.",
        parameters=_PRECONDITIONS,
        responses=(_Response("200", "The record exists."), _NOT_MODIFIED),
        errors=(400, _AUTH, 404, 406, 412, 503),
    ),
    _Operation(
        "record",
        "PUT",
        "replace",
        summary="Create or replace a {name}",
        description="Create the record with this id, or replace it whole. "
        "`If-None-Match: *` creates only; `If-Match` replaces only that version.",
        parameters=_PRECONDITIONS,
        responses=(
            _Response("201", "Created.", data="record"),
            _Response("200", "Replaced.", data="record"),
        ),
        errors=(400, _AUTH, _PARENT, 406, 409, 412, 413, 415, 503),
        body="input",
    ),
    _Operation(
        "record",
        "PATCH",
        "update",
        summary="Modify a {name}",
        description="`application/json`: each top-level field given replaces the stored one. "
        "`application/merge-patch+json`: RFC 7396 (objects merge, `null` removes). "
        "`application/json-patch+json`: RFC 6902 operations on `/data/...`{permissions}. "
        "A patch that changes nothing writes nothing.",
        parameters=("IfMatch", "ResponseBehavior"),
        responses=(
            _Response(
                "200", "The record (or the fields `Response-Behavior` asks for).", data="fields"
            ),
        ),
        errors=(400, _AUTH, 404, 406, 409, 412, 413, 415, 503),
        body="changes",
    ),
    _Operation(
        "record",
        "DELETE",
        "delete",
        summary="Delete a {name}",
        parameters=("last_modified", "IfMatch"),
        responses=(_Response("200", "The record's tombstone.", data="tombstone"),),
        errors=(400, _AUTH, 404, 406, 412, 503),
    ),
)


#: The parameters an operation builds from its resource; any other name is a component.
_RESOURCE_PARAMETERS: dict[str, Callable[[ResourceEndpoints], list[dict[str, Any]]]] = {
    "filters": lambda resource: _filters(resource),
    "_sort": lambda resource: [_sort_parameter(resource)],
    "_fields": lambda resource: [_fields_parameter(resource)],
    "last_modified": lambda resource: [
        _query(
            "last_modified",
            RECORD_TIMESTAMP,
            "Force the tombstone's timestamp (replication), when greater than the record's.",
        )
    ],
}


def _parameters(names: Sequence[str], resource: ResourceEndpoints) -> list[dict[str, Any]]:
    rv: list[dict[str, Any]] = []
    for name in names:
        build = _RESOURCE_PARAMETERS.get(name)
        rv += build(resource) if build is not None else _parameter_refs(name)
    return rv


def _request_body(kind: str, names: _Names, resource: ResourceEndpoints) -> dict[str, Any]:
    if kind == "input":
        return {"required": True, "content": _json(_body(names.input, resource, required=False))}
    changes = _ref(names.patch)
    return {
        "required": True,
        "content": {
            "application/json": {"schema": changes},
            "application/merge-patch+json": {"schema": changes},
            "application/json-patch+json": {"schema": copy.deepcopy(_JSON_PATCH)},
        },
    }


def _response(spec: _Response, names: _Names, resource: ResourceEndpoints) -> dict[str, Any]:
    if spec.ref is not None:
        return {"$ref": f"#/components/responses/{spec.ref}"}
    rv: dict[str, Any] = {
        "description": spec.description,
        "headers": _headers(*spec.headers, required=_TIMESTAMP_HEADERS),
    }
    if spec.data is not None:
        schema = {"record": names.record, "fields": names.fields, "tombstone": TOMBSTONE}
        data = _ref(schema[spec.data])
        properties: dict[str, Any] = {
            "data": {"type": "array", "items": data} if spec.many else data
        }
        if resource.kind == "shareable" and spec.data != "tombstone" and not spec.many:
            properties["permissions"] = _ref(PERMISSIONS)
        rv["content"] = _json({"type": "object", "properties": properties, "required": ["data"]})
    return rv


def _error_statuses(
    errors: Sequence[int | str], placeholders: Mapping[str, tuple[int, ...]]
) -> list[int]:
    rv: list[int] = []
    for status in errors:
        rv += placeholders[status] if isinstance(status, str) else (status,)
    return rv


def _operation(
    spec: _Operation,
    resource: ResourceEndpoints,
    names: _Names,
    texts: Mapping[str, str],
    placeholders: Mapping[str, tuple[int, ...]],
    security: list[dict[str, list[str]]] | None,
) -> dict[str, Any]:
    name = resource.registration.name
    op: dict[str, Any] = {
        "tags": [name],
        "summary": spec.summary.format(**texts),
        "operationId": f"{name}_{spec.suffix}",
    }
    if spec.description is not None:
        op["description"] = spec.description.format(**texts)
    op["parameters"] = _parameters(spec.parameters, resource)
    if spec.body is not None:
        op["requestBody"] = _request_body(spec.body, names, resource)
    op["responses"] = {
        **{response.status: _response(response, names, resource) for response in spec.responses},
        **_error_refs(*_error_statuses(spec.errors, placeholders)),
    }
    if security is not None:
        op["security"] = security
    return op


def _resource_operations(
    resource: ResourceEndpoints,
    names: _Names,
    info: ApiInfo,
    security: list[dict[str, list[str]]] | None,
) -> dict[str, dict[str, Any]]:
    """The path items of a resource: its enabled operations of :data:`_OPERATIONS`."""
    registration = resource.registration
    name = registration.name
    collection_parameters = _path_parameters(registration.collection_path, None)
    endpoints = {
        "collection": (
            registration.collection_path,
            collection_parameters,
            resource.collection_methods,
        ),
        "record": (
            registration.record_path,
            _path_parameters(registration.record_path, registration.id_generator.regexp),
            resource.record_methods,
        ),
    }
    placeholders = {
        _AUTH: (401, 403) if info.security_schemes else (),
        _PARENT: (404,) if collection_parameters else (),
    }
    texts = {
        "name": name,
        "plural": registration.collection_path.rstrip("/").rsplit("/", 1)[-1] or name,
        "permissions": " and `/permissions/...`" if resource.kind == "shareable" else "",
    }
    rv: dict[str, dict[str, Any]] = {}
    for endpoint, (rule, parameters, methods) in endpoints.items():
        operations = {
            spec.method.lower(): _operation(spec, resource, names, texts, placeholders, security)
            for spec in _OPERATIONS
            if spec.endpoint == endpoint and spec.method in methods
        }
        if not operations:
            continue
        item: dict[str, Any] = {"parameters": parameters} if parameters else {}
        rv[_openapi_path(info.prefix + rule)] = {**item, **operations}
    return rv


# --------------------------------------------------------------------------
# Plain routes
# --------------------------------------------------------------------------

_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _rule_variables(rule: str) -> dict[str, dict[str, Any]]:
    """Each variable of a werkzeug rule and the schema of its converter."""
    rv = {}
    for match in _RULE_VARIABLE.finditer(rule):
        converter = match["converter"] or "default"
        schema = dict(_CONVERTER_SCHEMAS.get(converter, {"type": "string"}))
        if converter == "any" and match["args"]:
            schema["enum"] = [arg.strip().strip("'\"") for arg in match["args"].split(",")]
        rv[match["name"]] = schema
    return rv


def _typed(kind: str | None) -> dict[str, Any]:
    return {"type": kind or "string"}


def _route_operation(
    route: Route, method: str, doc: Docstring, models: Models
) -> tuple[dict[str, Any], list[str]]:
    warnings = list(doc.warnings)
    op: dict[str, Any] = {}
    if doc.summary:
        op["summary"] = doc.summary
    if doc.description:
        op["description"] = doc.description
    variables = _rule_variables(route.rule)
    parameters: list[dict[str, Any]] = []
    documented_paths = {p.name: p for p in doc.parameters if p.location == "path"}
    for name, schema in variables.items():
        parameter: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if name in documented_paths:
            parameter["description"] = documented_paths[name].description
            if documented_paths[name].type:
                schema = _typed(documented_paths[name].type)
        parameter["schema"] = schema
        parameters.append(parameter)
    for name in documented_paths:
        if name not in variables:
            warnings.append(f"':path {name}:' is not a variable of the route {route.rule}.")
    forms: dict[str, dict[str, Any]] = {"form": {}, "body": {}}
    form_required: dict[str, list[str]] = {"form": [], "body": []}
    for parameter_doc in doc.parameters:
        location = parameter_doc.location
        if location in ("query", "header"):
            parameters.append(
                {
                    "name": parameter_doc.name,
                    "in": location,
                    "description": parameter_doc.description,
                    "required": parameter_doc.required,
                    "schema": _typed(parameter_doc.type),
                }
            )
        elif location in forms:
            forms[location][parameter_doc.name] = {
                **({"type": parameter_doc.type} if parameter_doc.type else {}),
                "description": parameter_doc.description,
            }
            if parameter_doc.required:
                form_required[location].append(parameter_doc.name)
    if parameters:
        op["parameters"] = parameters
    content = {}
    for location, media_type in (
        ("form", "application/x-www-form-urlencoded"),
        ("body", "application/json"),
    ):
        if forms[location]:
            form: dict[str, Any] = {"type": "object", "properties": forms[location]}
            if form_required[location]:
                form["required"] = form_required[location]
            content[media_type] = {"schema": form}
    if content:
        op["requestBody"] = {
            "content": content,
            "required": any(form_required.values()),
        }
    returned: dict[str, Any] | None = None
    if doc.rtype is not None:
        reference = models.reference(doc.rtype)
        if reference is None:
            warnings.append(models.problems[doc.rtype])
        else:
            returned = _json({"$ref": reference})
    responses: dict[str, Any] = {}
    for status in doc.statuses:
        response: dict[str, Any] = {
            "description": status.message or HTTP_STATUS_CODES.get(status.code, "")
        }
        if returned is not None and 200 <= status.code < 300:
            response["content"] = copy.deepcopy(returned)
        responses[str(status.code)] = response
    if not any(200 <= status.code < 400 for status in doc.statuses):
        responses["200"] = {"description": "Success."}
        if returned is not None:
            responses["200"]["content"] = returned
    responses["default"] = {"$ref": "#/components/responses/Error"}
    op["responses"] = dict(sorted(responses.items(), key=lambda item: item[0]))
    if warnings:
        op["x-kiln-warnings"] = warnings
    return op, warnings


def _operation_id(route: Route, method: str, multiple: bool, taken: set[str]) -> str:
    base = _NOT_IDENTIFIER.sub("_", route.endpoint).strip("_") or "route"
    if multiple:
        base += "_" + method.lower()
    candidate, counter = base, 2
    while candidate in taken:
        candidate, counter = f"{base}_{counter}", counter + 1
    taken.add(candidate)
    return candidate


def _tag(route: Route) -> str:
    return "service" if route.endpoint.startswith("kiln.") else "routes"


# --------------------------------------------------------------------------
# Links: from a created record to what can be done with it
# --------------------------------------------------------------------------


def _under(child: str, parent: str) -> dict[str, str] | None:
    """How ``child`` (a collection path) sits right under ``parent`` (a record path).

    Returns each of the child's path variables mapped to the parent record's
    variable holding its value, or ``None`` when ``child`` is not right below.
    """
    child_parts = child.strip("/").split("/")
    parent_parts = parent.strip("/").split("/")
    if len(child_parts) != len(parent_parts) + 1:
        return None
    mapping = {}
    for mine, theirs in zip(child_parts, parent_parts, strict=False):
        mine_var = _RULE_VARIABLE.fullmatch(mine)
        theirs_var = _RULE_VARIABLE.fullmatch(theirs)
        if (mine_var is None) != (theirs_var is None):
            return None
        if mine_var is None:
            if mine != theirs:
                return None
        else:
            assert theirs_var is not None
            mapping[mine_var["name"]] = theirs_var["name"]
    return mapping


_RECORD_OPERATIONS = ("get", "check", "replace", "update", "delete")
_COLLECTION_OPERATIONS = ("list", "count", "create", "delete_all")


def _add_links(paths: dict[str, dict[str, Any]], resources: Sequence[ResourceEndpoints]) -> None:
    """Link every create (POST, PUT) to the record's operations and its children's."""
    operations = {
        op["operationId"]: op
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for resource in resources:
        registration = resource.registration
        record_variables = [m["name"] for m in _RULE_VARIABLE.finditer(registration.record_path)]
        links: dict[str, Any] = {}
        for suffix in _RECORD_OPERATIONS:
            target = f"{registration.name}_{suffix}"
            if target in operations:
                links[target] = {
                    "operationId": target,
                    "parameters": {
                        name: "$response.body#/data/id" if name == "id" else f"$request.path.{name}"
                        for name in record_variables
                    },
                }
        for child in resources:
            mapping = _under(child.registration.collection_path, registration.record_path)
            if mapping is None:
                continue
            for suffix in _COLLECTION_OPERATIONS:
                target = f"{child.registration.name}_{suffix}"
                if target in operations:
                    links[target] = {
                        "operationId": target,
                        "parameters": {
                            mine: "$response.body#/data/id"
                            if theirs == "id"
                            else f"$request.path.{theirs}"
                            for mine, theirs in mapping.items()
                        },
                    }
        for source in (f"{registration.name}_create", f"{registration.name}_replace"):
            if source in operations and links:
                for status in ("200", "201"):
                    operations[source]["responses"][status]["links"] = copy.deepcopy(links)


# --------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------


def _batch_path(info: ApiInfo) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["batch"],
            "summary": "Send many requests in one transaction",
            "operationId": "kiln_batch",
            "description": "Each sub-request goes through exactly the pipeline of the same "
            "request sent alone, with the batch's headers. The batch is one transaction: a "
            "4xx sub-response is reported and the rest commits; a 5xx fails the whole batch, "
            "which then applies nothing and answers that error.",
            "requestBody": {"required": True, "content": _json(_ref(BATCH))},
            "responses": {
                "200": {
                    "description": "One response per request, in order.",
                    "content": _json(_ref(BATCH_RESPONSE)),
                },
                **_error_refs(400, 413, 415, 503),
            },
        }
    }


def build_openapi(
    info: ApiInfo,
    routes: Iterable[Route] = (),
    resources: Iterable[ResourceEndpoints] = (),
    models: Models | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an API; never raises on bad docstrings.

    ``models`` resolves ``:rtype:`` names (a fresh :class:`Models` by
    default). Problems are listed in ``x-kiln-warnings``, at the top level
    (``"GET /v1/things: line 3: ..."``) and on each operation.
    """
    models = models if models is not None else Models()
    schemes = {name: dict(scheme) for name, scheme in info.security_schemes.items()}
    anyone: list[dict[str, list[str]]] = [{}]
    anyone += [{name: []} for name in schemes]
    paths: dict[str, dict[str, Any]] = {}
    schemas = _kiln_schemas(info)
    tags: list[dict[str, str]] = []
    taken: set[str] = set()
    all_warnings: list[str] = []
    resources = sorted(resources, key=lambda r: r.registration.name)
    for resource in resources:
        names = _resource_names(resource.registration.name, taken)
        schemas.update(_resource_schemas(resource, names))
        security: list[dict[str, list[str]]] | None = None
        if resource.kind == "private" and schemes:
            security = [{name: []} for name in schemes]
        for path, item in _resource_operations(resource, names, info, security).items():
            paths.setdefault(path, {}).update(item)
        tag = {"name": resource.registration.name}
        if resource.registration.cls.__doc__:
            tag["description"] = resource.registration.cls.__doc__.strip()
        tags.append(tag)
        taken.update(
            op["operationId"]
            for item in paths.values()
            for op in item.values()
            if isinstance(op, dict) and "operationId" in op
        )
    _add_links(paths, resources)
    if info.batch:
        paths[f"{info.prefix}/batch"] = _batch_path(info)
    operation_ids = {
        op["operationId"]
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for route in sorted(routes, key=lambda r: (r.rule, r.endpoint)):
        doc = parse_docstring(route.docstring)
        methods = [m for m in METHOD_ORDER if m in route.methods and m not in ("HEAD", "OPTIONS")]
        path = _openapi_path(route.rule)
        for method in methods:
            op, warnings = _route_operation(route, method, doc, models)
            op = {
                "tags": [_tag(route)],
                "operationId": _operation_id(route, method, len(methods) > 1, operation_ids),
                **op,
            }
            paths.setdefault(path, {}).setdefault(method.lower(), op)
        if methods:
            # Every method of a route has the same warnings: list them once.
            all_warnings += [f"{' '.join(methods)} {path}: {warning}" for warning in warnings]
    for dotted, schema in sorted(models.schemas.items()):
        schemas[dotted.replace("/", "_")] = schema
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": info.title, "version": info.version},
        "servers": [{"url": info.server_url}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "parameters": _common_parameters(),
        },
        "tags": [*tags, {"name": "batch"}, {"name": "routes"}, {"name": "service"}],
    }
    if info.description:
        document["info"]["description"] = info.description
    if info.docs_url:
        document["externalDocs"] = {"url": info.docs_url}
    if schemes:
        document["components"]["securitySchemes"] = schemes
        document["security"] = anyone
    all_warnings += models.warnings
    if all_warnings:
        document["x-kiln-warnings"] = all_warnings
    return document
