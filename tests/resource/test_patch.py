from __future__ import annotations

import pytest

from tests.resource.conftest import PREFIX, assert_error, create, new_id

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture
def author(caller):
    return create(caller, "/mushrooms", {"name": "a", "author": {"name": "ann", "age": 3}})


def patch(call, record, body, media_type="application/json", **headers):
    headers = {"Content-Type": media_type, **headers}
    return call("PATCH", f"/mushrooms/{record['id']}", body, headers)


def test_a_json_patch_replaces_top_level_values_whole(call, author):
    rv = patch(call, author, {"data": {"author": {"name": "bo"}, "size": 2}})
    assert rv.status == 200
    assert rv.data["author"] == {"name": "bo"}
    assert rv.data["size"] == 2
    assert rv.data["name"] == "a"
    assert rv.data["last_modified"] > author["last_modified"]
    assert rv.headers["ETag"] == f'"{rv.data["last_modified"]}"'


def test_a_merge_patch_merges_nested_objects_and_removes_nulls(call, author):
    body = {"data": {"author": {"name": "bo", "age": None}, "size": 2}}
    rv = patch(call, author, body, MERGE_PATCH)
    assert rv.data["author"] == {"name": "bo"}
    assert rv.data["size"] == 2


def test_a_json_patch_applies_operations_on_data(call, author):
    ops = [
        {"op": "replace", "path": "/data/author/name", "value": "bo"},
        {"op": "add", "path": "/data/tags", "value": ["x"]},
    ]
    rv = patch(call, author, ops, JSON_PATCH)
    assert rv.data["author"] == {"name": "bo", "age": 3}
    assert rv.data["tags"] == ["x"]


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/permissions/x", "value": 1}],
        [{"op": "remove", "path": "/data/nope"}],
        [{"op": "replace", "path": "/data", "value": 3}],
        [{"op": "test", "path": "/data/name", "value": "other"}],
        ["not an operation"],
        {"op": "add"},
    ],
)
def test_a_json_patch_that_does_not_apply_answers_400(call, author, ops):
    assert_error(patch(call, author, ops, JSON_PATCH), 400, 107)


@pytest.mark.parametrize("body", [{}, {"data": None}, {"data": []}])
def test_a_patch_without_data_answers_400(call, author, body):
    assert_error(patch(call, author, body), 400, 107)


def test_a_patch_with_an_empty_body_answers_400(client, author):
    rv = client.patch(f"{PREFIX}/mushrooms/{author['id']}", content_type="application/json")
    assert rv.status_code == 400


def test_a_patch_changing_nothing_keeps_the_timestamp(call, author, caller):
    rv = patch(call, author, {"data": {"name": "a"}})
    assert rv.status == 200
    assert rv.data == author
    assert caller.direct("GET", "/mushrooms").headers["ETag"] == f'"{author["last_modified"]}"'


@pytest.mark.parametrize(
    ("behavior", "expected_keys"),
    [
        ("full", {"id", "last_modified", "name", "author", "size", "edible"}),
        ("light", {"size", "edible"}),
        ("diff", set()),
    ],
)
def test_response_behavior_selects_what_a_patch_answers(call, author, behavior, expected_keys):
    rv = patch(
        call, author, {"data": {"size": 2, "edible": True}}, **{"Response-Behavior": behavior}
    )
    assert rv.status == 200
    assert set(rv.data) == expected_keys


@pytest.mark.parametrize(
    ("behavior", "expected"), [("full", None), ("light", {"tags": ["x"]}), ("diff", {})]
)
def test_response_behavior_applies_to_json_patches(call, author, behavior, expected):
    ops = [{"op": "add", "path": "/data/tags", "value": ["x"]}]
    rv = patch(call, author, ops, JSON_PATCH, **{"Response-Behavior": behavior})
    if expected is None:
        assert rv.data["tags"] == ["x"]
        assert rv.data["name"] == "a"
    else:
        assert rv.data == expected


def test_response_behavior_diff_shows_what_the_server_changed(call, caller):
    article = caller.direct("PUT", "/articles/hello", {"data": {"title": "t"}}).data
    rv = call(
        "PATCH",
        f"/articles/{article['id']}",
        {"data": {"title": "u", "revision": 99}},
        {"Response-Behavior": "diff"},
    )
    assert rv.data == {"revision": 2}


def test_an_unknown_response_behavior_answers_400(call, author):
    rv = patch(call, author, {"data": {"size": 1}}, **{"Response-Behavior": "loud"})
    assert_error(rv, 400, 107)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_unique_field_conflict_answers_409(call, caller, method):
    first = create(caller, "/mushrooms", {"name": "a"})
    second = create(caller, "/mushrooms", {"name": "b"})
    rv = call(method, f"/mushrooms/{second['id']}", {"data": {"name": "a"}})
    assert_error(rv, 409, 122)
    assert rv.body["details"]["field"] == "name"
    assert rv.body["details"]["existing"]["id"] == first["id"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_changing_a_readonly_field_answers_400(call, caller, method):
    record = create(caller, "/mushrooms", {"name": "a", "origin": "fr"})
    rv = call(method, f"/mushrooms/{record['id']}", {"data": {"name": "a", "origin": "it"}})
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "data.origin"
    same = call(method, f"/mushrooms/{record['id']}", {"data": {"name": "b", "origin": "fr"}})
    assert same.status == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_body_id_that_differs_from_the_url_answers_400(call, caller, method):
    record = create(caller, "/notes", {})
    assert_error(call(method, f"/notes/{record['id']}", {"data": {"id": new_id()}}), 400, 107)


def test_patch_of_a_missing_record_answers_404(call):
    assert_error(call("PATCH", f"/notes/{new_id()}", {"data": {"a": 1}}), 404, 110)


def test_a_patch_is_validated_against_the_whole_schema(call, author):
    assert_error(patch(call, author, {"data": {"size": "big"}}), 400, 107)
    assert_error(patch(call, author, {"data": {"name": None}}, MERGE_PATCH), 400, 107)
