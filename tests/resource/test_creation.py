from __future__ import annotations

import re

import pytest

from tests.resource.conftest import create, mock_any_int, new_id

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_post_creates_a_record_with_a_uuid4_id_and_an_integer_timestamp(call):
    rv = call("POST", "/mushrooms", {"data": {"name": "amanita"}})
    assert rv.status == 201
    record = rv.data
    assert UUID4.match(record["id"])
    assert isinstance(record["last_modified"], int)
    assert record["name"] == "amanita"
    assert rv.headers["ETag"] == f'"{record["last_modified"]}"'


def test_post_of_an_existing_id_answers_200_with_the_existing_record_unchanged(call, caller):
    existing = create(caller, "/mushrooms", {"name": "amanita"})
    rv = call("POST", "/mushrooms", {"data": {"id": existing["id"], "name": "boletus"}})
    assert rv.status == 200
    assert rv.data == existing
    assert caller.direct("GET", f"/mushrooms/{existing['id']}").data == existing


def test_post_breaking_a_unique_field_answers_200_with_the_holder(call, caller):
    existing = create(caller, "/mushrooms", {"name": "amanita"})
    rv = call("POST", "/mushrooms", {"data": {"name": "amanita"}})
    assert (rv.status, rv.data) == (200, existing)


def test_put_creates_a_new_record_then_replaces_it(call):
    object_id = new_id()
    first = call("PUT", f"/mushrooms/{object_id}", {"data": {"name": "a", "size": 1}})
    assert first.status == 201
    assert first.data["id"] == object_id
    second = call("PUT", f"/mushrooms/{object_id}", {"data": {"name": "b"}})
    assert second.status == 200
    assert second.data == {"id": object_id, "name": "b", "last_modified": mock_any_int()}
    assert second.data["last_modified"] > first.data["last_modified"]


@pytest.mark.parametrize(("path", "status"), [("/notes", 201), ("/mushrooms", 400)])
def test_a_post_without_data_creates_an_empty_record_when_the_schema_allows_it(call, path, status):
    assert call("POST", path, {}).status == status
