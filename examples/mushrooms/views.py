"""The example service: a shared catalogue of mushrooms, and a greeting route.

Try it with `make serve`, then::

    curl -s -u alice:secret -X POST http://127.0.0.1:8888/v1/mushrooms \\
         -H 'Content-Type: application/json' \\
         -d '{"data": {"name": "Amanita muscaria", "edible": false, "cap_cm": 12}}'
    curl -s 'http://127.0.0.1:8888/v1/mushrooms?edible=false&_sort=-cap_cm&_limit=10'
    curl -s 'http://127.0.0.1:8888/v1/mushrooms?_since=0'      # changes, deletions included
    curl -s -u alice:secret -X POST http://127.0.0.1:8888/v1/notebooks \\
         -H 'Content-Type: application/json' -d '{"data": {"text": "found a cep"}}'
    curl -s -u alice:secret -X POST http://127.0.0.1:8888/v1/baskets \\
         -H 'Content-Type: application/json' \\
         -d '{"data": {"title": "Sunday"}, "permissions": {"read": ["system.Everyone"]}}'
"""

from __future__ import annotations

from typing import Any

from kiln import app, config, resource


@resource.register()
class Mushroom(resource.Resource):
    """A mushroom species: names are unique, the Latin name cannot change.

    Everyone may read the catalogue; changing it takes a login
    (``mushroom.write_principals`` in the config).
    """

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "edible": {"type": "boolean"},
            "cap_cm": {"type": "number", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    unique_fields = ("name",)
    readonly_fields = ("name",)

    def process_record(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        new["tags"] = sorted(set(new.get("tags", [])))
        return new


@resource.register(
    collection_path="/mushrooms/{mushroom_id}/sightings",
    record_path="/mushrooms/{mushroom_id}/sightings/{id}",
)
class Sighting(resource.Resource):
    """Where and when a mushroom was seen: nested under its mushroom."""

    schema = {
        "type": "object",
        "properties": {
            "place": {"type": "string"},
            "seen_on": {"type": "string", "format": "date"},
        },
        "required": ["place"],
    }


@resource.register(collection_path="/notebooks")
class Notebook(resource.UserResource):
    """Your private field notes: each user sees only their own (log in with any
    user:password pair, e.g. ``curl -u alice:secret``)."""

    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 10_000}},
        "required": ["text"],
    }


@resource.register()
class Basket(resource.ShareableResource):
    """A basket of finds to share: ``permissions`` say who may read or write it."""

    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 200},
            "mushrooms": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title"],
    }


@app.route("/v1/greetings/<name>", methods=["GET"])
def greet(name: str) -> dict[str, object]:
    """Greet a visitor; half of the names (always the same ones) get shouted at.

    :path name: Who to greet.
    :status 200: The greeting.
    """
    greeting = f"Hello, {name}!"
    shouting = config.feature_flag("shouting", key=name)
    return {"greeting": greeting.upper() if shouting else greeting, "shouting": shouting}
