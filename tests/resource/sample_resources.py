"""Resources of the protocol test app (like Cliquet's testapp)."""

from __future__ import annotations

from typing import Any

from kiln import resource
from kiln.errors import HTTPError

EXPLODE = "explode"
#: A title whose record a hook refuses with a 503 of its own (an upstream it needs is down).
UNAVAILABLE = "unavailable"


@resource.register()
class Mushroom(resource.Resource):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "edible": {"type": "boolean"},
            "size": {"type": "number"},
            "origin": {"type": "string"},
            "tags": {"type": "array"},
            "author": {"type": "object"},
        },
        "required": ["name"],
    }
    unique_fields = ("name",)
    readonly_fields = ("origin",)


@resource.register()
class Note(resource.Resource):
    schema = None


@resource.register()
class Strict(resource.Resource):
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "meta": {"type": "object"}},
        "additionalProperties": False,
    }


@resource.register()
class Bucket(resource.Resource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections")
class Collection(resource.Resource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections/{collection_id}/records")
class Record(resource.Resource):
    pass


@resource.register(collection_methods=("GET", "HEAD", "POST"), record_methods=("GET", "HEAD"))
class Report(resource.Resource):
    pass


@resource.register()
class Article(resource.Resource):
    id_generator = resource.Slug

    def process_record(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if new.get("title") == EXPLODE:
            raise RuntimeError("process_record was told to explode")
        if new.get("title") == UNAVAILABLE:
            raise HTTPError(503, message="The upstream is down.", headers={"Retry-After": "7"})
        new["revision"] = (old or {}).get("revision", 0) + 1
        return new


def init_app(app: Any) -> None:
    """Plain routes for the batch tests: a text answer and a redirect loop."""
    from flask import Response, redirect

    def text() -> Response:
        return Response("plain text", mimetype="text/plain")

    def loop() -> Response:
        return redirect("/v1/loop", code=307)

    app.add_url_rule("/v1/text", "sample-text", text, methods=["GET"])
    app.add_url_rule("/v1/loop", "sample-loop", loop, methods=["GET"])
