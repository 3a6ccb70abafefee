"""The ``kiln`` target of ``bench/resources.py``: a plain :class:`~kiln.resource.Resource`.

Records at ``/v1/buckets/{bucket_id}/collections/{collection_id}/records``
(the floor's and Kinto's path), with the floor's schema. Nothing else is
mounted, so the records have no parent resource to check: their
``parent_id`` is ``/buckets/<bucket_id>/collections/<collection_id>``. Who
may read, write and create is decided once for the whole resource, by the
``record.read_principals``, ``write_principals`` and ``create_principals``
settings the benchmark sets to ``["system.Authenticated"]``: no permission
is stored per record.
"""

from __future__ import annotations

from bench.floor_app import SCHEMA

from kiln import resource

COLLECTION_PATH = "/buckets/{bucket_id}/collections/{collection_id}/records"


@resource.register(collection_path=COLLECTION_PATH)
class Record(resource.Resource):
    """name (required), size, edible: the floor's schema."""

    schema = SCHEMA
    #: The list the benchmark asks for: ``?edible=true&_sort=-size`` (the floor has no index).
    indexes = (("edible", "-size"),)
