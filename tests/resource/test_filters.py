from __future__ import annotations

import pytest

from tests.resource.conftest import Caller, assert_error, create


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=boletus", {"boletus"}),
        ("size=5", {"chanterelle"}),
        ('name="boletus"', {"boletus"}),
        ("edible=true", {"boletus", "chanterelle"}),
        ("edible=false", {"amanita", "Death Cap"}),
        ("min_size=5", {"boletus", "chanterelle", "Death Cap"}),
        ("max_size=5", {"amanita", "chanterelle"}),
        ("gt_size=5", {"boletus", "Death Cap"}),
        ("lt_size=5", {"amanita"}),
        ("not_name=amanita", {"boletus", "chanterelle", "Death Cap"}),
        ("in_size=3,10", {"amanita", "boletus"}),
        ("in_name=amanita,boletus", {"amanita", "boletus"}),
        ("exclude_size=3,10", {"chanterelle", "Death Cap"}),
        ("has_tags=true", {"amanita", "boletus", "Death Cap"}),
        ("has_tags=false", {"chanterelle"}),
        ("like_name=*CAP*", {"Death Cap"}),
        ("like_name=b*", {"boletus"}),
        ("contains_tags=cap", {"amanita", "Death Cap"}),
        ('contains_tags=["red","cap"]', {"amanita"}),
        ('contains_any_tags=["red","brown"]', {"amanita", "boletus"}),
        ("author.name=ann", {"chanterelle"}),
        ("has_author.name=true", {"chanterelle", "Death Cap"}),
        ("min_size=4&edible=false", {"Death Cap"}),
        ("size=999", set()),
    ],
)
def test_filters_select_the_matching_records(caller, mushrooms, query, expected):
    rv = caller.both("GET", f"/mushrooms?{query}")
    assert {r["name"] for r in rv.data} == expected
    head = caller.both("HEAD", f"/mushrooms?{query}")
    assert head.headers["Total-Records"] == str(len(expected))


def test_filters_on_ids_and_timestamps_are_typed(caller, mushrooms):
    first = mushrooms[0]
    rv = caller.both("GET", f"/mushrooms?id={first['id']}")
    assert [r["id"] for r in rv.data] == [first["id"]]
    rv = caller.both("GET", f"/mushrooms?in_last_modified={first['last_modified']}")
    assert [r["id"] for r in rv.data] == [first["id"]]
    assert_error(caller.both("GET", "/mushrooms?in_last_modified=a,b"), 400, 107)


@pytest.mark.parametrize("query", ["bogus=1", "min_bogus=1", "_sort=bogus", "_fields=bogus"])
def test_unknown_fields_answer_400_when_the_schema_refuses_additional_properties(caller, query):
    rv = caller.both("GET", f"/stricts?{query}")
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["location"] == "querystring"


@pytest.mark.parametrize("path", ["/mushrooms", "/notes"])
def test_unknown_fields_are_accepted_when_the_schema_allows_them(caller, path):
    # schema.is_known_field: any root when additionalProperties is not false
    # (schemaless included): unknown fields may be stored, so they may be queried.
    create(caller, path, {"name": "x", "bogus": 1})
    assert len(caller.both("GET", f"{path}?bogus=1").data) == 1
    assert caller.both("GET", f"{path}?bogus=2").data == []
    assert caller.both("GET", f"{path}?_sort=-bogus").status == 200


def test_declared_fields_of_a_strict_schema_are_filterable(caller):
    create(caller, "/stricts", {"title": "t", "meta": {"k": 1}})
    assert len(caller.both("GET", "/stricts?meta.k=1&_sort=title&_fields=title").data) == 1


@pytest.mark.parametrize("query", ["bad$field=1", "_since=1&_since=2", "has_name=maybe"])
def test_malformed_filters_answer_400(caller, query):
    assert_error(caller.both("GET", f"/mushrooms?{query}"), 400, 107)


def test_head_counts_the_filtered_set_without_tombstones(caller, mushrooms):
    caller.direct("DELETE", f"/mushrooms/{mushrooms[0]['id']}")
    head = caller.both("HEAD", "/mushrooms?edible=false")
    assert head.body == ""
    assert head.headers["Total-Records"] == "1"
    assert caller.both("HEAD", "/mushrooms?_since=0").headers["Total-Records"] == "3"
    assert "Total-Records" not in caller.both("GET", "/mushrooms").headers


def test_get_counts_only_with_count_on_get(build_app):
    caller = Caller(build_app({"paginate": {"count_on_get": True}}).test_client(), "direct")
    create(caller, "/notes", {"a": 1})
    create(caller, "/notes", {"a": 2})
    assert caller.both("GET", "/notes?a=1").headers["Total-Records"] == "1"


def test_etag_describes_the_unfiltered_collection(caller, mushrooms):
    rv = caller.both("GET", "/mushrooms?size=999")
    assert rv.headers["ETag"] == f'"{mushrooms[-1]["last_modified"]}"'
