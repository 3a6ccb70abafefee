"""Clay's ``GET /_docs`` document (Swagger 1.2-flavoured), built from docstrings.

The shape is Clay's (``apiVersion``, ``swaggerVersion``, ``basePath``,
``resourcePath``, ``apis``, ``models``), with its bugs fixed:

- ``{"required": true}`` metadata works, and ``:rtype:`` names nested
  modules (``models.sub.Thing``); whatever cannot be read is a warning in
  the operation's ``warnings`` and in the top-level ``warnings``, never a 500;
- operations come in a fixed order (``GET``, ``POST``, ``PUT``, ``PATCH``,
  ``DELETE``) and ``apis`` are sorted by path;
- ``notes`` is the plain-text description (no ``<br />``, no repeated
  summary); ``responseMessages`` (Swagger 1.2's name) is sent beside Clay's
  ``responseMessage``;
- a model that is a whole schema (the manual's ``{"id", "required",
  "properties"}``) is the model; Clay nested it under ``properties``.

Sans-IO: the Flask view in :mod:`kiln.docs` gathers the routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kiln.docs._docstring import Parameter, parse_docstring
from kiln.docs._models import Models
from kiln.docs.openapi import METHOD_ORDER, Route

__all__ = ["build_clay_docs"]

UNDOCUMENTED = "Undocumented"


def _parameter(parameter: Parameter) -> dict[str, Any]:
    return {
        "name": parameter.name,
        "description": parameter.description,
        "required": parameter.required,
        "dataType": parameter.type or "string",
        "type": "complex" if parameter.directive == "json" else "primitive",
        "allowMultiple": False,
        "paramType": parameter.location,
    }


def build_clay_docs(
    routes: Iterable[Route], base_path: str, models: Models | None = None
) -> dict[str, Any]:
    """Clay's ``/_docs`` body for ``routes``; never raises on bad docstrings."""
    models = models if models is not None else Models(ref_prefix="")
    apis = []
    all_warnings: list[str] = []
    for route in sorted(routes, key=lambda r: (r.rule, r.endpoint)):
        doc = parse_docstring(route.docstring)
        warnings = list(doc.warnings)
        if doc.rtype is not None and models.reference(doc.rtype) is None:
            warnings.append(models.problems[doc.rtype])
        operations = []
        for method in METHOD_ORDER:
            if method not in route.methods or method in ("HEAD", "OPTIONS"):
                continue
            messages = [{"code": s.code, "message": s.message} for s in doc.statuses]
            operation: dict[str, Any] = {
                "method": method,
                "nickname": route.name or route.endpoint,
                "summary": doc.summary or UNDOCUMENTED,
                "notes": doc.description or ("" if doc.documented else UNDOCUMENTED),
                "parameters": [_parameter(p) for p in doc.parameters],
                "responseMessages": messages,
                "responseMessage": messages,
            }
            if doc.rtype is not None and doc.rtype in models.schemas:
                operation["responseClass"] = doc.rtype
            if warnings:
                operation["warnings"] = warnings
            operations.append(operation)
        all_warnings += [f"{route.rule}: {warning}" for warning in warnings]
        apis.append({"path": route.rule, "operations": operations})
    body: dict[str, Any] = {
        "apiVersion": "0.2",
        "swaggerVersion": "1.2",
        "basePath": base_path,
        "resourcePath": "/",
        "apis": apis,
        "models": {
            dotted: {**schema, "id": dotted} for dotted, schema in sorted(models.schemas.items())
        },
    }
    all_warnings += models.warnings
    if all_warnings:
        body["warnings"] = all_warnings
    return body
