"""Resource schemas: JSON Schema, compiled once per resource.

A resource's ``schema`` is a JSON Schema dict (draft 2020-12 unless its
``$schema`` names another), a pydantic model class (its
``model_json_schema()`` is used), or ``None`` for a schemaless resource.
It describes the record's own fields: the reserved ``id``,
``last_modified`` and ``deleted`` are handled by kiln and never validated
by it.

Validation is done by ``jsonschema_rs`` (chosen by ``bench/schema_validators.py``:
the fastest of the validators that report *every* error and support 2020-12).
Errors are reported all at once, one per field, in a stable order::

    {"location": "body", "name": "data.name", "description": "3 is not of type \\"string\\""}

Sans-IO: nothing here touches Flask.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from kiln.exceptions import StartupError
from kiln.resource.query import RESERVED_FIELDS

__all__ = ["ErrorDetail", "Schema"]

ErrorDetail = dict[str, str]


def _json_schema(declared: Any, resource_name: str) -> dict[str, Any] | None:
    if declared is None:
        return None
    if isinstance(declared, Mapping):
        return dict(declared)
    to_schema = getattr(declared, "model_json_schema", None)
    if callable(to_schema):
        return dict(to_schema())
    raise StartupError(
        f"Resource {resource_name!r}: schema must be a JSON Schema dict, a pydantic model "
        f"class or None, not {type(declared).__name__}."
    )


#: Keywords whose value is one subschema, a list of them, or a mapping of them.
_SUBSCHEMA = frozenset(
    {"additionalProperties", "additionalItems", "contains", "not", "if", "then", "else"}
    | {"propertyNames", "unevaluatedItems", "unevaluatedProperties", "items"}
)
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SUBSCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _with_properties(schema: Any) -> Any:
    """``schema`` where every ``additionalProperties: false`` sits beside ``properties``.

    Without ``properties``, jsonschema_rs reports unknown fields as one
    anonymous "False schema" error at the object; beside ``properties`` (even
    empty) it names each unknown field, which is what clients are told.
    """
    if not isinstance(schema, Mapping):
        return schema
    rv: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
            rv[key] = {name: _with_properties(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            rv[key] = [_with_properties(sub) for sub in value]
        elif key in _SUBSCHEMA:
            rv[key] = _with_properties(value)
        else:
            rv[key] = value
    if rv.get("additionalProperties") is False and "properties" not in rv:
        rv["properties"] = {}
    return rv


def _pattern(regex: str) -> re.Pattern[str] | None:
    try:
        return re.compile(regex)
    except re.error:  # an ECMA-only construct: the field is then not known here
        return None


@dataclass(frozen=True)
class Schema:
    """A resource's compiled schema and what it says about fields."""

    json_schema: dict[str, Any] | None
    validator: Any
    properties: frozenset[str]
    allows_unknown: bool
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def compile(cls, declared: Any, resource_name: str) -> Schema:
        """Compile ``declared`` (dict, pydantic class or None) once.

        :raises StartupError: the schema is not valid JSON Schema.
        """
        json_schema = _json_schema(declared, resource_name)
        if json_schema is None:
            return cls(None, None, frozenset(), True)
        try:
            # Formats ("date", "email", ...) are checked: a record the schema
            # refuses is never stored, nor documented as valid (OpenAPI).
            validator = jsonschema_rs.validator_for(
                _with_properties(json_schema), validate_formats=True
            )
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            errors = "; ".join(_schema_errors(json_schema, exc))
            raise StartupError(
                f"Resource {resource_name!r}: its schema is not valid JSON Schema: {errors}."
            ) from None
        properties = json_schema.get("properties", {})
        closed = (
            json_schema.get("additionalProperties") is False
            or json_schema.get("unevaluatedProperties") is False
        )
        patterns = [_pattern(regex) for regex in json_schema.get("patternProperties", {})]
        return cls(
            json_schema,
            validator,
            frozenset(properties),
            not closed,
            tuple(pattern for pattern in patterns if pattern is not None),
        )

    @property
    def schemaless(self) -> bool:
        return self.validator is None

    def field_type(self, name: str) -> str | None:
        """The one JSON type the schema gives top-level field ``name``
        (``"number"``, ``"string"``...), or ``None`` when it gives none or several."""
        if self.json_schema is None:
            return None
        properties = self.json_schema.get("properties")
        declared = properties.get(name) if isinstance(properties, Mapping) else None
        kind = declared.get("type") if isinstance(declared, Mapping) else None
        if isinstance(kind, list) and len(kind) == 1:
            kind = kind[0]
        return kind if isinstance(kind, str) else None

    def is_known_field(self, dotted: str) -> bool:
        """Whether ``dotted`` may be filtered or sorted on.

        Reserved fields always; on schemaless resources and schemas that
        allow additional properties, any field; otherwise the root must be a
        declared property or match one of ``patternProperties``.
        """
        root = dotted.split(".", 1)[0]
        return (
            root in RESERVED_FIELDS
            or self.allows_unknown
            or root in self.properties
            or any(pattern.search(root) for pattern in self.patterns)
        )

    def validate(self, data: Mapping[str, Any]) -> list[ErrorDetail]:
        """Every error of ``data`` (reserved fields left out), sorted; ``[]`` when valid."""
        if self.validator is None:
            return []
        record = {key: value for key, value in data.items() if key not in RESERVED_FIELDS}
        details = [
            detail for error in self.validator.iter_errors(record) for detail in _details(error)
        ]
        unique = {(d["name"], d["description"]): d for d in details}
        return [unique[key] for key in sorted(unique)]


#: The meta-schema of a schema without ``$schema``.
_DEFAULT_META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def _schema_errors(json_schema: dict[str, Any], exc: Exception) -> list[str]:
    """Every error of an invalid schema, each at its place in the schema (``#/properties/a``).

    The compiler stops at the first error; the schema's meta-schema (the
    draft its ``$schema`` names) lists them all. The compiler's own error
    is added when the meta-schema saw nothing at its place (a ``$ref`` to
    nowhere, an unknown draft).
    """
    meta = json_schema.get("$schema", _DEFAULT_META_SCHEMA)
    try:
        meta_validator = jsonschema_rs.validator_for(
            {"$schema": meta, "$ref": meta}, validate_formats=True
        )
        errors = list(meta_validator.iter_errors(json_schema))
    except (jsonschema_rs.ReferencingError, ValueError):  # an unknown draft, a non-JSON value
        errors = []
    found = {_pointer(error.instance_path): _schema_error_message(error) for error in errors}
    compiler_path = _pointer(getattr(exc, "instance_path", []))
    found.setdefault(compiler_path, str(exc).splitlines()[0].rstrip("."))
    return [f"{pointer}: {message}" for pointer, message in found.items()]


def _pointer(path: Any) -> str:
    """A JSON Pointer fragment (RFC 6901): ``#/properties/name/type``; ``#`` is the root."""
    parts = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "#" + "".join(f"/{part}" for part in parts)


def _schema_error_message(error: Any) -> str:
    path = list(error.instance_path)
    if (
        path
        and path[-1] == "type"
        and isinstance(error.kind, jsonschema_rs.ValidationErrorKind.AnyOf)
    ):
        # The meta-schema's own words are "not valid under any of the schemas
        # listed in the 'anyOf' keyword": name the types instead.
        value = error.instance
        guesses = difflib.get_close_matches(value, _TYPES, 1, 0.6) if isinstance(value, str) else []
        hint = f'did you mean "{guesses[0]}"?' if guesses else "one of " + ", ".join(_TYPES)
        return f"{json.dumps(value)} is not a type ({hint})"
    return str(error.message)


def _details(error: Any) -> list[ErrorDetail]:
    path = ["data", *(str(part) for part in error.instance_path)]
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return [_detail([*path, str(kind.property)], "This field is required.")]
    if isinstance(
        kind,
        jsonschema_rs.ValidationErrorKind.AdditionalProperties
        | jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
    ):
        return [
            _detail([*path, str(name)], "This field is not allowed.") for name in kind.unexpected
        ]
    return [_detail(path, str(error.message))]


def _detail(path: list[str], description: str) -> ErrorDetail:
    return {"location": "body", "name": ".".join(path), "description": description}
