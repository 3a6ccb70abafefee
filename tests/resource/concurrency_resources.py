"""Resources served to tests/resource/test_concurrency.py and test_fuzz.py.

Each concurrency scenario writes to its own resource, so that one server
(the multi-process gunicorn one) can serve them all without interference.
Their ``process_record`` hook obeys three flags of the record:

- ``"slow": true`` sleeps :data:`SLOW_SECONDS` (inside the request's unit of
  work: after the batch's earlier writes, before this one);
- ``"explode": true`` raises, so the request answers a 5xx;
- ``"whoami": true`` stamps the serving process id in ``pid``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kiln import resource

SLOW_SECONDS = 0.3

#: One resource per scenario (each mounted at ``/v1/<name>s``).
PROBES = ("counter", "solo", "feed", "stamp", "lot", "quiet", "item")


class Probe(resource.Resource):
    id_generator = resource.Slug

    def process_record(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if new.get("slow") is True:
            time.sleep(SLOW_SECONDS)
        if new.get("explode") is True:
            raise RuntimeError("explode: this record asked for a 5xx")
        if new.get("whoami") is True:
            new = {**new, "pid": os.getpid()}
        return new


for _name in PROBES:
    resource.register(name=_name)(
        type(_name.title(), (Probe,), {"__module__": __name__, "__qualname__": _name.title()})
    )


@resource.register(name="plain")
class Plain(resource.Resource):
    id_generator = resource.Slug


@resource.register(name="fungus")
class Fungus(resource.Resource):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "size": {"type": "number"},
            "tags": {"type": "array"},
            "author": {"type": "object"},
            "kind": {"type": "string"},
        },
    }
    unique_fields = ("name",)
    readonly_fields = ("kind",)
    id_generator = resource.Slug
