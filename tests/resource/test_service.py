from __future__ import annotations

import kiln
from tests.resource.conftest import PREFIX, VIEWS, assert_error, new_id


def test_heartbeat_reports_a_working_storage(client):
    rv = client.get(f"{PREFIX}/__heartbeat__")
    assert rv.get_json()["storage"] is True


def test_unknown_records_and_urls_use_distinct_errnos(caller):
    assert_error(caller.both("GET", f"/notes/{new_id()}"), 404, 110)
    assert_error(caller.both("GET", "/nothing-here"), 404, 111)


def test_an_app_can_skip_schema_initialization_on_an_initialized_database(backend, tmp_path):
    url = str(tmp_path / "shared.sqlite") if backend == "sqlite" else ""
    tree = {
        "views": [VIEWS],
        "storage": {"backend": backend, "url": url},
    }
    first = kiln.create_app(tree, configure_logging=False).test_client()
    assert first.post(f"{PREFIX}/notes", json={"data": {}}).status_code == 201
    tree["storage"]["initialize_on_startup"] = False
    second = kiln.create_app(tree, configure_logging=False).test_client()
    assert second.get(f"{PREFIX}/notes").status_code == 200
