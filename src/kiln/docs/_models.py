"""Resolving ``:rtype:`` names to JSON Schemas.

``:rtype: things.protocol.SearchResults`` names, by its dotted import path,
a JSON Schema dict (Clay's manual), a pydantic model class (its
``model_json_schema()``), or a dict of properties (``{"count": {"type":
"integer"}}``, Clay's other reading). Unlike Clay, which imported the
top-level package only (so ``models.sub.Thing`` crashed), the longest
importable module prefix is imported with :mod:`importlib`, then the rest
is read as attributes.

A model may refer to another model of its module by name, Swagger 1.2
style (``{"$ref": "SearchResult"}``); those are resolved beside it.
Whatever cannot be resolved becomes a warning and an unconstrained schema,
never an exception.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["Models", "component_name", "resolve_object"]

#: Keywords telling that a dict is a whole schema, not a mapping of properties.
_SCHEMA_KEYWORDS = frozenset(
    {"type", "properties", "$ref", "items", "allOf", "anyOf", "oneOf", "enum", "const"}
    | {"required", "additionalProperties", "patternProperties", "$defs", "not"}
)
_BARE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
_COMPONENT_NAME = re.compile(r"[^A-Za-z0-9._-]")

Importer = Callable[[str], ModuleType]


def resolve_object(dotted: str, importer: Importer = importlib.import_module) -> Any:
    """The object ``dotted`` names: the longest importable module, then attributes.

    :raises LookupError: nothing by that name; the message says what is missing.
    """
    parts = dotted.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise LookupError(f"{dotted!r} is not a dotted name like 'module.Model'")
    problem = f"no module {parts[0]!r} can be imported"
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importer(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not _is_prefix(exc.name, module_name):
                # The module exists but imports something missing.
                raise LookupError(f"importing {module_name!r} failed: {exc}") from None
            continue
        except Exception as exc:
            raise LookupError(
                f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        for index, attribute in enumerate(parts[split:], start=split):
            if not hasattr(obj, attribute):
                problem = f"{'.'.join(parts[:index])!r} has no attribute {attribute!r}"
                raise LookupError(problem)
            obj = getattr(obj, attribute)
        return obj
    raise LookupError(problem)


def _is_prefix(package: str, module_name: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def component_name(dotted: str) -> str:
    """A name usable under ``#/components/schemas/``."""
    return _COMPONENT_NAME.sub("_", dotted)


@dataclass
class Models:
    """The models ``:rtype:`` directives named, resolved once each.

    ``schemas`` maps a model's dotted name to its JSON Schema, with
    references to other models rewritten by ``ref_prefix`` (``#/components/
    schemas/`` for OpenAPI, ``""`` for Clay's ``/_docs``); ``problems``
    maps a dotted name that could not be resolved to why; ``warnings``
    lists problems found inside the models resolved.
    """

    ref_prefix: str = "#/components/schemas/"
    importer: Importer = importlib.import_module
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    #: Problems inside resolved models (a ``$ref`` nothing answers).
    warnings: list[str] = field(default_factory=list)

    def reference(self, dotted: str) -> str | None:
        """The reference to model ``dotted`` (resolving it), or ``None`` when it cannot be.

        ``problems[dotted]`` then says why.
        """
        if dotted in self.problems:
            return None
        if dotted not in self.schemas:
            try:
                obj = resolve_object(dotted, self.importer)
            except LookupError as exc:
                self.problems[dotted] = f"':rtype: {dotted}' cannot be resolved: {exc}."
                return None
            schema = _as_schema(obj)
            if schema is None:
                self.problems[dotted] = (
                    f"':rtype: {dotted}' names an object of type {type(obj).__name__}; "
                    "it must name a JSON Schema dict or a pydantic model class."
                )
                return None
            self.schemas[dotted] = {}  # placeholder: models may refer to each other
            self.schemas[dotted] = self._rewrite(schema, dotted)
        return self.ref_prefix + (component_name(dotted) if self.ref_prefix else dotted)

    def _rewrite(self, node: Any, dotted: str) -> Any:
        if isinstance(node, list):
            return [self._rewrite(item, dotted) for item in node]
        if not isinstance(node, Mapping):
            return node
        rv: dict[str, Any] = {}
        for key, value in node.items():
            if (
                key == "$ref"
                and isinstance(value, str)
                and value.startswith("#")
                and self.ref_prefix
            ):
                # A pointer into the model itself (pydantic's ``#/$defs/...``).
                rv[key] = self.ref_prefix + component_name(dotted) + value[1:]
            elif key == "$ref" and isinstance(value, str) and _BARE_NAME.match(value):
                module = dotted.rpartition(".")[0]
                target = value if "." in value else f"{module}.{value}"
                reference = self.reference(target)
                if reference is None:
                    # Unresolvable: leave the value unconstrained, say why.
                    problem = self.problems[target].replace(":rtype:", "$ref")
                    rv["description"] = problem
                    self.warnings.append(f"model {dotted}: {problem}")
                    continue
                rv[key] = reference
            elif key == "id" and isinstance(value, str) and self.ref_prefix:
                # Swagger 1.2's model id; JSON Schema's ``title`` says the same.
                rv.setdefault("title", value)
            else:
                rv[key] = self._rewrite(value, dotted)
        return rv


def _as_schema(obj: Any) -> dict[str, Any] | None:
    to_schema = getattr(obj, "model_json_schema", None)
    if isinstance(obj, type) and callable(to_schema):
        return dict(to_schema())
    if not isinstance(obj, Mapping):
        return None
    if not obj or _SCHEMA_KEYWORDS & set(obj):
        return dict(obj)
    return {"type": "object", "properties": dict(obj)}
