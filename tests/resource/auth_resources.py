"""Resources of every kind, for the authentication and permission tests."""

from __future__ import annotations

from kiln import resource

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}


@resource.register()
class Toadstool(resource.ShareableResource):
    schema = SCHEMA
    id_generator = resource.Slug


@resource.register(collection_path="/diaries")
class Diary(resource.UserResource):
    schema = SCHEMA
    id_generator = resource.Slug


@resource.register()
class Memo(resource.Resource):
    schema = SCHEMA
    id_generator = resource.Slug


@resource.register()
class Bucket(resource.ShareableResource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections")
class Collection(resource.ShareableResource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections/{collection_id}/records")
class Record(resource.ShareableResource):
    id_generator = resource.Slug
