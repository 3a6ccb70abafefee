"""Resources whose routes share one pattern: a shelf's record and the books
on it (``/shelves/<id>`` and ``/shelves/<shelf_id>``), for the dispatch tests."""

from __future__ import annotations

from kiln import resource


@resource.register(collection_path="/shelves")
class Shelf(resource.Resource):
    id_generator = resource.Slug


@resource.register(collection_path="/shelves/{shelf_id}", record_path="/shelves/{shelf_id}/{id}")
class Book(resource.Resource):
    id_generator = resource.Slug
