from __future__ import annotations

import pytest

from tests.resource.conftest import PREFIX, Caller, assert_error, create

# -- request shape ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/mushrooms"), ("PUT", "/mushrooms/{id}"), ("PATCH", "/mushrooms/{id}")],
)
def test_unknown_top_level_body_keys_are_refused(call, caller, method, path):
    record = create(caller, "/mushrooms", {"name": "a"})
    rv = call(method, path.format(id=record["id"]), {"data": {"name": "b"}, "extra": 1})
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "extra"


@pytest.mark.parametrize("body", [[1], "text", {"data": [1]}, {"data": {"id": 3.14}}])
def test_bodies_of_the_wrong_shape_are_refused(call, body):
    assert_error(call("POST", "/notes", body), 400, 107)


def test_an_invalid_url_id_is_refused_before_storage(caller):
    rv = caller.both("GET", "/mushrooms/not-a-uuid")
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["location"] == "path"


def test_invalid_json_is_refused_with_errno_107(client):
    rv = client.post(f"{PREFIX}/mushrooms", data=b"{nope", content_type="application/json")
    assert rv.status_code == 400
    assert rv.get_json()["errno"] == 107
    assert "Invalid JSON" in rv.get_json()["message"]


def test_a_wrong_content_type_is_refused_with_415(call):
    rv = call("POST", "/notes", {"data": {}}, {"Content-Type": "text/plain"})
    assert_error(rv, 415, 107)


def test_a_patch_in_an_unknown_media_type_is_refused_with_415(call, caller):
    record = create(caller, "/notes", {})
    rv = call("PATCH", f"/notes/{record['id']}", {"data": {}}, {"Content-Type": "text/csv"})
    assert_error(rv, 415, 107)


def test_accept_without_json_is_refused_with_406(caller):
    assert_error(caller.both("GET", "/notes", headers={"Accept": "text/html"}), 406, 107)


def test_accept_allowing_json_is_served(caller):
    assert caller.both("GET", "/notes", headers={"Accept": "text/html, */*;q=0.1"}).status == 200


def test_bodies_over_max_body_bytes_are_refused_with_413(build_app, mode):
    call = Caller(build_app({"request": {"max_body_bytes": 200}}).test_client(), mode)
    rv = call("POST", "/notes", {"data": {"text": "x" * 300}})
    assert_error(rv, 413, 113)


@pytest.mark.parametrize("depth", [101, 200])
def test_deeply_nested_json_is_refused_with_a_4xx(call, depth):
    nested: object = 1
    for _ in range(depth):
        nested = [nested]
    rv = call("POST", "/notes", {"data": {"deep": nested}})
    assert_error(rv, 400, 107)
    assert "nesting" in str(rv.body)


def test_deeply_nested_raw_json_is_refused_with_a_4xx(client):
    for depth in (300, 2000):
        raw = b'{"data": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
        rv = client.post(f"{PREFIX}/notes", data=raw, content_type="application/json")
        assert rv.status_code == 400


def test_moderately_nested_json_is_stored(call):
    nested: object = 1
    for _ in range(90):
        nested = {"a": nested}
    rv = call("POST", "/notes", {"data": {"deep": nested}})
    assert rv.status == 201
    assert rv.data["deep"] == nested


# -- schema -------------------------------------------------------------------


def test_invalid_values_answer_every_schema_error(call):
    rv = call("POST", "/mushrooms", {"data": {"size": "big", "edible": 3}})
    assert_error(rv, 400, 107)
    names = [detail["name"] for detail in rv.body["details"]]
    assert names == sorted(names)
    assert {"data.name", "data.size", "data.edible"} <= set(names)
    assert all(d["location"] == "body" and d["description"] for d in rv.body["details"])
    assert rv.body["message"].startswith("data.")


def test_unknown_fields_are_kept_when_the_schema_allows_them(call):
    rv = call("POST", "/mushrooms", {"data": {"name": "a", "colour": "red"}})
    assert rv.data["colour"] == "red"


def test_unknown_fields_are_refused_one_detail_each_with_additional_properties_false(call):
    rv = call("POST", "/stricts", {"data": {"title": "t", "x": 1, "y": 2}})
    assert_error(rv, 400, 107)
    assert [d["name"] for d in rv.body["details"]] == ["data.x", "data.y"]


def test_a_schemaless_resource_keeps_everything(call):
    rv = call("POST", "/notes", {"data": {"anything": {"goes": [1, 2]}}})
    assert rv.data["anything"] == {"goes": [1, 2]}
