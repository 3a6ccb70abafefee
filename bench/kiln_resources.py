"""The resource ``bench/resources.py`` serves with kiln: the floor's ``mushrooms``."""

from __future__ import annotations

from bench.floor_app import SCHEMA

from kiln import resource


@resource.register()
class Mushroom(resource.Resource):
    """``/v1/mushrooms``: name (required), size, edible; the floor's schema."""

    schema = SCHEMA
