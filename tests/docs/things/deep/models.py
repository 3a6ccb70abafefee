"""A model two packages down (Clay resolved only one level: ``models.sub.Other`` crashed)."""

from __future__ import annotations

from typing import Any


class Pet:
    """Looks like a pydantic model: a ``model_json_schema`` class method with ``$defs``."""

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "title": "Pet",
            "properties": {"owner": {"$ref": "#/$defs/Owner"}, "name": {"type": "string"}},
            "required": ["name"],
            "$defs": {"Owner": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }


Other = {"type": "object", "properties": {"pet": {"$ref": "tests.docs.things.deep.models.Pet"}}}
