"""Resources of every shape, for the OpenAPI tests."""

from __future__ import annotations

from typing import Any

from kiln import resource


@resource.register(collection_path="/shelves")
class Shelf(resource.ShareableResource):
    """A shelf: shared by permissions."""

    id_generator = resource.Slug
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "size": {"type": ["integer", "null"]}},
        "required": ["label"],
        "additionalProperties": False,
    }


@resource.register(collection_path="/shelves/{shelf_id}/boxes")
class Box(resource.ShareableResource):
    """A box on a shelf."""

    id_generator = resource.Slug


@resource.register(collection_path="/shelves/{shelf_id}/boxes/{box_id}/items")
class Item(resource.Resource):
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "dims": {"type": "object", "properties": {"w": {"type": "number"}}, "required": ["w"]},
            "kind": {"type": ["string", "number"]},
        },
        "required": ["tags"],
    }


@resource.register()
class Note(resource.UserResource):
    """Private notes: each user has their own."""


class _Pet:
    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"owner": {"$ref": "#/$defs/Owner"}, "name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
            "$defs": {
                "Owner": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                }
            },
        }


@resource.register()
class Pet(resource.Resource):
    schema = _Pet


@resource.register()
class Sensor(resource.Resource):
    schema = {"type": "object", "patternProperties": {"^x_": {"type": "number"}}}


@resource.register(
    name="kiln-error", collection_methods=("GET", "POST"), record_methods=("GET", "DELETE")
)
class Clash(resource.Resource):
    pass


@resource.register()
class Reading(resource.Resource):
    """Declares reserved fields itself, and odd property schemas."""

    schema = {
        "$id": "https://example.com/reading.json",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "last_modified": {"type": "integer"},
            "value": {"anyOf": [{"type": "number"}, {"$ref": "#/$defs/Missing"}]},
            "anything": True,
        },
        "additionalProperties": False,
        "$defs": {"Missing": {"type": "null"}},
        "dependentRequired": {"value": ["anything"]},
    }
