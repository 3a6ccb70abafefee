"""The ``kiln-shareable`` target of ``bench/resources.py``: Kinto's shape in kiln.

Three :class:`~kiln.resource.ShareableResource` classes nested as Kinto's
buckets, collections and records, so a record request checks that its
bucket and collection exist and inherits their permissions, as in Kinto.
Records have the floor's schema; buckets and collections take readable ids
(``bench``, ``items``) and any content. The benchmark seeds the bucket and
the collection owned by the bench user (``write`` on each) and gives every
seeded record a ``write`` ACE for that user, through kiln's permission
backend; records created during the run get theirs from kiln (the creator
is always added to ``write``).
"""

from __future__ import annotations

from bench.floor_app import SCHEMA
from bench.kiln_resources import COLLECTION_PATH

from kiln import resource


@resource.register()
class Bucket(resource.ShareableResource):
    """``/v1/buckets/{id}``."""

    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections")
class Collection(resource.ShareableResource):
    """``/v1/buckets/{bucket_id}/collections/{id}``."""

    id_generator = resource.Slug


@resource.register(collection_path=COLLECTION_PATH)
class Record(resource.ShareableResource):
    """name (required), size, edible: the floor's schema."""

    schema = SCHEMA
    #: The list the benchmark asks for: ``?edible=true&_sort=-size`` (the floor has no index).
    indexes = (("edible", "-size"),)
