from __future__ import annotations

import pytest

from tests.resource.conftest import assert_error, create, mock_any_int, new_id

# -- records ------------------------------------------------------------------


def test_delete_answers_a_tombstone(call, caller):
    record = create(caller, "/notes", {"a": 1})
    rv = call("DELETE", f"/notes/{record['id']}")
    assert rv.status == 200
    assert rv.data == {"id": record["id"], "last_modified": mock_any_int(), "deleted": True}
    assert rv.data["last_modified"] > record["last_modified"]


@pytest.mark.parametrize("object_id", ["missing", "deleted"])
def test_delete_of_a_missing_or_deleted_record_answers_404(call, caller, object_id):
    record = create(caller, "/notes", {})
    caller.direct("DELETE", f"/notes/{record['id']}")
    target = record["id"] if object_id == "deleted" else new_id()
    assert_error(call("DELETE", f"/notes/{target}"), 404, 110)
    assert_error(call("GET", f"/notes/{target}"), 404, 110)


def test_delete_with_a_later_last_modified_forces_the_tombstone_timestamp(call, caller):
    record = create(caller, "/notes", {})
    forced = record["last_modified"] + 10_000
    rv = call("DELETE", f'/notes/{record["id"]}?last_modified="{forced}"')
    assert rv.data["last_modified"] == forced


def test_delete_with_an_older_last_modified_ignores_it(call, caller):
    record = create(caller, "/notes", {})
    rv = call("DELETE", f"/notes/{record['id']}?last_modified=5")
    assert rv.data["last_modified"] > record["last_modified"]


def test_delete_with_a_non_integer_last_modified_answers_400(call, caller):
    record = create(caller, "/notes", {})
    assert_error(call("DELETE", f"/notes/{record['id']}?last_modified=soon"), 400, 107)


# -- collections --------------------------------------------------------------


def test_collection_delete_with_filters_answers_the_tombstones(call, caller, mushrooms):
    rv = call("DELETE", "/mushrooms?edible=false")
    assert rv.status == 200
    assert {r["id"] for r in rv.data} == {mushrooms[0]["id"], mushrooms[3]["id"]}
    assert all(r["deleted"] is True for r in rv.data)
    assert rv.headers["ETag"] == f'"{max(r["last_modified"] for r in rv.data)}"'
    remaining = caller.direct("GET", "/mushrooms").data
    assert {r["name"] for r in remaining} == {"boletus", "chanterelle"}


def test_collection_delete_with_an_unknown_filter_answers_400(call, caller):
    create(caller, "/stricts", {})
    assert_error(call("DELETE", "/stricts?nope=1"), 400, 107)
    assert len(caller.direct("GET", "/stricts").data) == 1
