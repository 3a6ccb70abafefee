"""The load tests' application: one resource of each kind kiln offers.

- ``/v1/psilos``: shareable (per-record ``read``/``write`` permissions), with a
  schema, a unique field and read-only fields;
- ``/v1/psilos/{psilo_id}/sightings``: shareable, nested under a psilo, whose
  permissions it inherits;
- ``/v1/notes``: private (each user sees only their own).

Serve it with ``KILN_CONFIG=loadtests/testapp.yaml kiln serve`` from the
repository's root.
"""

from __future__ import annotations

from kiln import resource

KINDS = ("agaric", "bolete", "chanterelle", "morel", "puffball")


@resource.register()
class Psilo(resource.ShareableResource):
    """A specimen; its name and kind never change once created."""

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "kind": {"enum": list(KINDS)},
            "size": {"type": "integer", "minimum": 0, "maximum": 1000},
            "edible": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            "notes": {"type": "string", "maxLength": 1000},
        },
        "required": ["name", "kind", "size"],
        "additionalProperties": False,
    }
    unique_fields = ("name",)
    readonly_fields = ("name", "kind")


@resource.register(
    collection_path="/psilos/{psilo_id}/sightings",
    record_path="/psilos/{psilo_id}/sightings/{id}",
)
class Sighting(resource.ShareableResource):
    """Where a psilo was seen: writable by whoever may write the psilo."""

    schema = {
        "type": "object",
        "properties": {
            "place": {"type": "string", "minLength": 1},
            "count": {"type": "integer", "minimum": 1},
        },
        "required": ["place", "count"],
    }


@resource.register()
class Note(resource.UserResource):
    """A private note: each user has a collection of their own."""

    schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "done": {"type": "boolean"}},
        "required": ["text"],
    }
