from __future__ import annotations

import email.utils
import re
import time
import uuid
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

import kiln
from tests.resource.conftest import PREFIX, VIEWS, Caller

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def new_id():
    return str(uuid.uuid4())


def create(caller, path, data):
    rv = caller.direct("POST", path, {"data": data})
    assert rv.status == 201, rv.body
    return rv.data


def assert_error(rv, status, errno):
    assert rv.status == status, rv.body
    assert rv.body["code"] == status
    assert rv.body["errno"] == errno
    assert rv.body["error"]


# -- envelope and ids ---------------------------------------------------------


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


class mock_any_int:
    def __eq__(self, other):
        return isinstance(other, int) and not isinstance(other, bool)


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


# -- schema -----------------------------------------------------------------------


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


# -- timestamps -------------------------------------------------------------------


def test_a_record_timestamp_equals_the_collection_etag_after_a_write(call, caller):
    record = call("POST", "/notes", {"data": {}}).data
    listing = caller.both("GET", "/notes")
    assert listing.headers["ETag"] == f'"{record["last_modified"]}"'


def test_an_empty_collection_has_a_stable_etag_without_writing(caller):
    first = caller.both("GET", "/notes")
    assert first.headers["ETag"] == caller.both("GET", "/notes").headers["ETag"]


def test_rapid_writes_get_distinct_increasing_timestamps(call, client):
    stamps = [call("POST", "/notes", {"data": {"n": n}}).data["last_modified"] for n in range(15)]
    batch = client.post(
        f"{PREFIX}/batch",
        json={
            "defaults": {"method": "POST", "path": "/notes"},
            "requests": [{"body": {"data": {"n": n}}} for n in range(15)],
        },
    )
    stamps += [r["body"]["data"]["last_modified"] for r in batch.get_json()["responses"]]
    assert stamps == sorted(set(stamps))
    assert len(stamps) == 30


def test_etag_is_quoted_and_last_modified_is_an_http_date(call):
    record = call("POST", "/notes", {"data": {}}).data
    rv = call("GET", f"/notes/{record['id']}")
    assert rv.headers["ETag"] == f'"{record["last_modified"]}"'
    expected = email.utils.formatdate(record["last_modified"] / 1000, usegmt=True)
    assert rv.headers["Last-Modified"] == expected


# -- preconditions ----------------------------------------------------------------


def test_if_none_match_current_on_a_collection_answers_304_with_etag(caller):
    create(caller, "/notes", {})
    etag = caller.direct("GET", "/notes").headers["ETag"]
    rv = caller.both("GET", "/notes", headers={"If-None-Match": etag})
    assert rv.status == 304
    assert rv.headers["ETag"] == etag
    assert rv.headers["Last-Modified"]
    older = f'"{int(etag.strip(chr(34))) - 1}"'
    assert caller.both("GET", "/notes", headers={"If-None-Match": older}).status == 200


def test_if_none_match_current_on_a_record_answers_304(caller):
    record = create(caller, "/notes", {})
    etag = f'"{record["last_modified"]}"'
    rv = caller.both("GET", f"/notes/{record['id']}", headers={"If-None-Match": etag})
    assert (rv.status, rv.headers["ETag"]) == (304, etag)


def test_if_none_match_star_on_an_existing_record_answers_304_not_500(caller):
    record = create(caller, "/notes", {})
    rv = caller.both("GET", f"/notes/{record['id']}", headers={"If-None-Match": "*"})
    assert rv.status == 304
    assert caller.both("GET", f"/notes/{new_id()}", headers={"If-None-Match": "*"}).status == 404


def test_if_none_match_star_is_ignored_on_a_collection(caller):
    create(caller, "/notes", {})
    assert caller.both("GET", "/notes", headers={"If-None-Match": "*"}).status == 200


def test_a_matching_if_match_lets_reads_and_writes_through(call, caller):
    record = create(caller, "/notes", {})
    etag = {"If-Match": f'"{record["last_modified"]}"'}
    assert call("GET", f"/notes/{record['id']}", headers=etag).status == 200
    assert call("PATCH", f"/notes/{record['id']}", {"data": {"a": 1}}, etag).status == 200


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("PUT", {"data": {"a": 2}}),
        ("PATCH", {"data": {"a": 2}}),
        ("DELETE", None),
    ],
)
def test_a_stale_if_match_on_a_record_answers_412_with_the_existing_record(
    call, caller, method, body
):
    record = create(caller, "/notes", {"a": 1})
    stale = {"If-Match": f'"{record["last_modified"] - 1}"'}
    args = (body,) if body is not None else ()
    rv = call(method, f"/notes/{record['id']}", *args, headers=stale)
    assert_error(rv, 412, 114)
    assert rv.body["details"]["existing"] == record
    assert caller.direct("GET", f"/notes/{record['id']}").data == record


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_if_match_on_a_missing_record_answers_412(call, method):
    body = {"data": {"a": 1}} if method in ("PUT", "PATCH") else None
    args = (body,) if body is not None else ()
    rv = call(method, f"/notes/{new_id()}", *args, headers={"If-Match": '"1"'})
    assert_error(rv, 412, 114)


def test_a_stale_if_match_on_a_collection_post_answers_412(call, caller):
    create(caller, "/notes", {})
    rv = call("POST", "/notes", {"data": {}}, {"If-Match": '"1"'})
    assert_error(rv, 412, 114)
    assert rv.body["details"] == {}
    assert len(caller.direct("GET", "/notes").data) == 1


def test_post_with_an_existing_id_checks_if_match_against_that_record(call, caller):
    record = create(caller, "/notes", {})
    body = {"data": {"id": record["id"]}}
    stale = call("POST", "/notes", body, {"If-Match": '"1"'})
    assert_error(stale, 412, 114)
    assert stale.body["details"]["existing"] == record
    current = {"If-Match": f'"{record["last_modified"]}"'}
    assert call("POST", "/notes", body, current).status == 200


def test_post_with_if_none_match_star_on_an_existing_id_answers_412(call, caller):
    record = create(caller, "/notes", {})
    rv = call("POST", "/notes", {"data": {"id": record["id"]}}, {"If-None-Match": "*"})
    assert_error(rv, 412, 114)


def test_post_with_if_none_match_star_on_a_taken_unique_field_answers_412(call, caller):
    create(caller, "/mushrooms", {"name": "a"})
    rv = call("POST", "/mushrooms", {"data": {"name": "a"}}, {"If-None-Match": "*"})
    assert_error(rv, 412, 114)


def test_a_stale_if_match_on_a_collection_delete_answers_412(call, caller):
    create(caller, "/notes", {})
    assert_error(call("DELETE", "/notes", headers={"If-Match": '"1"'}), 412, 114)
    assert len(caller.direct("GET", "/notes").data) == 1


def test_put_with_if_none_match_star_over_an_existing_record_answers_412(call, caller):
    record = create(caller, "/notes", {"a": 1})
    rv = call("PUT", f"/notes/{record['id']}", {"data": {"a": 2}}, {"If-None-Match": "*"})
    assert_error(rv, 412, 114)
    assert rv.body["details"]["existing"] == record


def test_put_with_if_none_match_star_over_a_tombstone_creates_it_again(call, caller):
    record = create(caller, "/notes", {"a": 1})
    caller.direct("DELETE", f"/notes/{record['id']}")
    rv = call("PUT", f"/notes/{record['id']}", {"data": {"a": 2}}, {"If-None-Match": "*"})
    assert rv.status == 201
    assert rv.data["a"] == 2


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ["123", "abc", '"abc"', '"12'])
def test_a_malformed_precondition_header_answers_400(caller, header, value):
    rv = caller.both("GET", "/notes", headers={header: value})
    assert_error(rv, 400, 107)
    assert rv.body["details"][0] == {
        "location": "header",
        "name": header,
        "description": rv.body["details"][0]["description"],
    }


# -- tombstones and polling ----------------------------------------------------------


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


def test_tombstones_appear_only_when_filtering_on_last_modified(caller):
    kept = create(caller, "/notes", {"n": 1})
    gone = create(caller, "/notes", {"n": 2})
    caller.direct("DELETE", f"/notes/{gone['id']}")
    since = kept["last_modified"]
    assert [r["id"] for r in caller.both("GET", "/notes").data] == [kept["id"]]
    polled = caller.both("GET", f"/notes?_since={since}").data
    assert polled == [{"id": gone["id"], "last_modified": mock_any_int(), "deleted": True}]
    assert caller.both("GET", f'/notes?_since="{since}"').data == polled
    assert caller.both("GET", f"/notes?gt_last_modified={since}").data == polled
    before = caller.both("GET", f"/notes?_before={polled[0]['last_modified']}").data
    assert [r["id"] for r in before] == [kept["id"]]
    assert caller.both("GET", "/notes?deleted=true").data == []
    assert caller.both("GET", "/notes?_since=0&deleted=true").data == polled


@pytest.mark.parametrize("value", ["abc", "1.5", '"x"'])
def test_since_and_before_need_integers(caller, value):
    assert_error(caller.both("GET", f"/notes?_since={value}"), 400, 107)
    assert_error(caller.both("GET", f"/notes?_before={value}"), 400, 107)


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_recreating_a_record_removes_its_tombstone(call, caller, method):
    record = create(caller, "/notes", {"a": 1})
    caller.direct("DELETE", f"/notes/{record['id']}")
    if method == "PUT":
        rv = call("PUT", f"/notes/{record['id']}", {"data": {"a": 2}})
    else:
        rv = call("POST", "/notes", {"data": {"id": record["id"], "a": 2}})
    assert rv.status == 201
    polled = caller.direct("GET", "/notes?_since=0").data
    assert polled == [rv.data]


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


# -- filters --------------------------------------------------------------------


@pytest.fixture
def mushrooms(caller):
    data = [
        {"name": "amanita", "size": 3, "edible": False, "tags": ["red", "cap"]},
        {"name": "boletus", "size": 10, "edible": True, "tags": ["brown"]},
        {"name": "chanterelle", "size": 5, "edible": True, "author": {"name": "ann"}},
        {
            "name": "Death Cap",
            "size": 7,
            "edible": False,
            "tags": ["cap"],
            "author": {"name": "bo"},
        },
    ]
    return [create(caller, "/mushrooms", item) for item in data]


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


# -- sorting ----------------------------------------------------------------------


def test_default_order_is_newest_first(caller, mushrooms):
    rv = caller.both("GET", "/mushrooms")
    assert [r["id"] for r in rv.data] == [r["id"] for r in reversed(mushrooms)]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("size", ["amanita", "chanterelle", "Death Cap", "boletus"]),
        ("-size", ["boletus", "Death Cap", "chanterelle", "amanita"]),
        ("-edible,size", ["chanterelle", "boletus", "amanita", "Death Cap"]),
        ("edible,-size", ["Death Cap", "amanita", "boletus", "chanterelle"]),
        ("author.name", ["chanterelle", "Death Cap", "boletus", "amanita"]),
        ("last_modified", ["amanita", "boletus", "chanterelle", "Death Cap"]),
    ],
)
def test_sort_orders_by_the_given_fields(caller, mushrooms, sort, expected):
    assert [r["name"] for r in caller.both("GET", f"/mushrooms?_sort={sort}").data] == expected


def test_an_unknown_sort_field_answers_400_when_not_allowed(caller):
    assert_error(caller.both("GET", "/stricts?_sort=-nope"), 400, 107)
    assert_error(caller.both("GET", "/mushrooms?_sort=no;pe"), 400, 107)


# -- pagination -------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1.5"])
def test_a_limit_that_is_not_a_positive_integer_answers_400(caller, limit):
    assert_error(caller.both("GET", f"/notes?_limit={limit}"), 400, 107)


def relative(next_page):
    parts = urlsplit(next_page)
    assert parts.scheme == "http"
    assert parts.netloc == "localhost"
    assert parts.path.startswith(PREFIX)
    return parts.path.removeprefix(PREFIX) + "?" + parts.query


def follow(caller, path, method="GET"):
    pages = []
    seen_tokens = set()
    while path is not None:
        rv = caller.both(method, path)
        assert rv.status == 200, rv.body
        pages.append(rv.data)
        next_page = rv.headers.get("Next-Page")
        path = relative(next_page) if next_page else None
        if path is not None:
            token = dict(parse_qsl(urlsplit(path).query))["_token"]
            assert token not in seen_tokens
            seen_tokens.add(token)
    return pages


@pytest.mark.parametrize("count", [5, 6, 7])
@pytest.mark.parametrize(
    "query",
    ["", "_sort=group,-n", "group=1", "_sort=-flag,n&min_n=1", "_sort=missing_sometimes,n"],
)
def test_following_next_page_returns_every_record_once_in_order(caller, count, query):
    for n in range(count):
        data = {"n": n, "group": n % 2, "flag": n % 3 == 0}
        if n % 2:
            data["missing_sometimes"] = n // 2
        create(caller, "/notes", data)
    everything = caller.both("GET", f"/notes?{query}").data
    pages = follow(caller, f"/notes?_limit=3&{query}")
    assert all(len(page) == 3 for page in pages[:-1])
    assert [r["id"] for page in pages for r in page] == [r["id"] for r in everything]


def test_next_page_keeps_the_original_parameters(caller):
    for n in range(3):
        create(caller, "/notes", {"n": n})
    rv = caller.both("GET", "/notes?_limit=2&min_n=0&_sort=n&_fields=n")
    params = parse_qsl(urlsplit(rv.headers["Next-Page"]).query)
    names = [name for name, _ in params]
    assert names == ["min_n", "_sort", "_fields", "_limit", "_token"]
    assert dict(params)["_limit"] == "2"


def test_the_last_page_has_no_next_page(caller):
    create(caller, "/notes", {})
    assert "Next-Page" not in caller.both("GET", "/notes?_limit=1").headers


def test_paginate_by_sets_the_page_size(build_app):
    caller = Caller(build_app({"paginate": {"by": 2}}).test_client(), "direct")
    for n in range(5):
        create(caller, "/notes", {"n": n})
    assert len(caller.both("GET", "/notes").data) == 2
    pages = follow(caller, "/notes")
    assert [len(page) for page in pages] == [2, 2, 1]


def test_max_limit_caps_the_page_but_not_paging_past_it(build_app):
    caller = Caller(build_app({"paginate": {"max_limit": 2}}).test_client(), "direct")
    for n in range(5):
        create(caller, "/notes", {"n": n})
    rv = caller.both("GET", "/notes?_limit=100")
    assert len(rv.data) == 2
    assert dict(parse_qsl(urlsplit(rv.headers["Next-Page"]).query))["_limit"] == "2"
    assert sum(len(page) for page in follow(caller, "/notes")) == 5


def test_next_page_honours_http_scheme_and_host(build_app):
    app = build_app({"http_scheme": "https", "http_host": "api.example.org"})
    caller = Caller(app.test_client(), "direct")
    create(caller, "/notes", {})
    create(caller, "/notes", {})
    next_page = caller.both("GET", "/notes?_limit=1").headers["Next-Page"]
    assert next_page.startswith("https://api.example.org/v1/notes?")


@pytest.mark.parametrize(
    "elsewhere",
    ["/mushrooms?_limit=1", "/notes?_limit=1&n=1", "/notes?_limit=1&_sort=n", "/articles?_limit=1"],
)
def test_a_token_replayed_on_another_collection_filter_or_sort_answers_400(caller, elsewhere):
    for _ in range(3):
        create(caller, "/notes", {"n": 1})
    token = dict(
        parse_qsl(urlsplit(caller.direct("GET", "/notes?_limit=1").headers["Next-Page"]).query)
    )["_token"]
    rv = caller.both("GET", f"{elsewhere}&_token={token}")
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "_token"


def test_a_token_replayed_under_another_parent_answers_400(caller):
    for bucket in ("a", "b"):
        caller.direct("PUT", f"/buckets/{bucket}", {"data": {}})
    for n in range(2):
        caller.direct("PUT", f"/buckets/a/collections/c{n}", {"data": {}})
    caller.direct("PUT", "/buckets/b/collections/c0", {"data": {}})
    next_page = caller.direct("GET", "/buckets/a/collections?_limit=1").headers["Next-Page"]
    token = dict(parse_qsl(urlsplit(next_page).query))["_token"]
    rv = caller.both("GET", f"/buckets/b/collections?_limit=1&_token={token}")
    assert_error(rv, 400, 107)


@pytest.mark.parametrize("token", ["garbage", "e30", "!!!", "eyJ2IjoxfQ"])
def test_a_garbage_token_answers_400(caller, token):
    assert_error(caller.both("GET", f"/notes?_token={token}"), 400, 107)


# -- partial responses ---------------------------------------------------------------


def test_fields_select_dotted_fields_on_lists_and_records(caller, mushrooms):
    rv = caller.both("GET", "/mushrooms?_fields=size,author.name&name=Death Cap")
    record = mushrooms[3]
    expected = {
        "id": record["id"],
        "last_modified": record["last_modified"],
        "size": 7,
        "author": {"name": "bo"},
    }
    assert rv.data == [expected]
    assert (
        caller.both("GET", f"/mushrooms/{record['id']}?_fields=size,author.name").data == expected
    )


def test_fields_on_a_schemaless_resource_leave_unknown_fields_out(caller):
    record = create(caller, "/notes", {"a": 1})
    rv = caller.both("GET", f"/notes/{record['id']}?_fields=nope")
    assert rv.data == {"id": record["id"], "last_modified": record["last_modified"]}


def test_fields_naming_an_unknown_root_of_a_strict_schema_answer_400(caller):
    record = create(caller, "/stricts", {"title": "t"})
    assert_error(caller.both("GET", f"/stricts/{record['id']}?_fields=nope"), 400, 107)


# -- PATCH --------------------------------------------------------------------------


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


# -- collection DELETE -----------------------------------------------------------------


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


# -- cache headers -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/notes", "/notes/{id}", "/notes?_limit=1"])
def test_reads_vary_on_authorization_and_origin_and_are_not_cached(caller, path):
    record = create(caller, "/notes", {})
    rv = caller.both("GET", path.format(id=record["id"]))
    assert rv.headers["Cache-Control"] == "no-cache"
    assert {v.strip() for v in rv.headers["Vary"].split(",")} >= {"Authorization", "Origin"}
    assert "Expires" not in rv.headers


@pytest.mark.parametrize("seconds", [0, 60])
def test_cache_expires_seconds_sends_max_age_and_expires(build_app, seconds):
    app = build_app({"note": {"cache_expires_seconds": seconds}})
    caller = Caller(app.test_client(), "direct")
    record = create(caller, "/notes", {})
    for path in ("/notes", f"/notes/{record['id']}"):
        rv = caller.both("GET", path)
        assert rv.headers["Cache-Control"] == f"max-age={seconds}"
        expires = email.utils.parsedate_to_datetime(rv.headers["Expires"]).timestamp()
        assert abs(expires - (time.time() + seconds)) < 5
    assert caller.direct("GET", "/mushrooms").headers["Cache-Control"] == "no-cache"


# -- per-endpoint settings, readonly, restricted methods -------------------------------------


@pytest.mark.parametrize(
    ("setting", "method", "path"),
    [
        ("collection_get_enabled", "GET", "/notes"),
        ("collection_get_enabled", "HEAD", "/notes"),
        ("collection_post_enabled", "POST", "/notes"),
        ("record_patch_enabled", "PATCH", "/notes/{id}"),
        ("record_delete_enabled", "DELETE", "/notes/{id}"),
    ],
)
def test_a_disabled_endpoint_answers_405(build_app, mode, setting, method, path):
    app = build_app({"note": {setting: False}})
    call = Caller(app.test_client(), mode)
    record = create(Caller(build_app().test_client(), "direct"), "/notes", {})
    body = {"data": {}} if method in ("POST", "PATCH") else None
    args = (body,) if body is not None else ()
    rv = call(method, path.format(id=record["id"]), *args)
    assert rv.status == 405
    if method != "HEAD":
        assert rv.body["errno"] == 115
    assert call("GET", f"/notes/{record['id']}").status == 404


def test_readonly_refuses_writes_and_serves_reads(build_app, mode):
    call = Caller(build_app({"readonly": True}).test_client(), mode)
    for method, path in [
        ("POST", "/notes"),
        ("PUT", f"/notes/{new_id()}"),
        ("PATCH", f"/notes/{new_id()}"),
        ("DELETE", f"/notes/{new_id()}"),
        ("DELETE", "/notes"),
    ]:
        body = ({"data": {}},) if method in ("POST", "PUT", "PATCH") else ()
        assert_error(call(method, path, *body), 405, 115)
    assert call("GET", "/notes").status == 200
    assert call("HEAD", "/notes").status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/reports"), ("PUT", "/reports/{id}"), ("DELETE", "/reports/{id}")],
)
def test_restricted_methods_answer_405_with_allow(call, method, path):
    rv = call(method, path.format(id=new_id()), *(({"data": {}},) if method == "PUT" else ()))
    assert_error(rv, 405, 115)
    allowed = {m.strip() for m in rv.headers["Allow"].split(",")}
    assert allowed >= {"GET", "HEAD"}
    assert "DELETE" not in allowed


def test_restricted_methods_still_serve_the_others(call):
    created = call("POST", "/reports", {"data": {"a": 1}})
    assert created.status == 201
    assert call("GET", f"/reports/{created.data['id']}").data == created.data


# -- nested resources -------------------------------------------------------------------


@pytest.fixture
def buckets(caller):
    for bucket in ("a", "b"):
        assert caller.direct("PUT", f"/buckets/{bucket}", {"data": {}}).status == 201


def test_parent_path_variables_make_separate_collections(call, caller, buckets):
    created = call("POST", "/buckets/a/collections", {"data": {"title": "in a"}})
    assert created.status == 201
    assert [c["id"] for c in caller.both("GET", "/buckets/a/collections").data] == [
        created.data["id"]
    ]
    assert caller.both("GET", "/buckets/b/collections").data == []
    cid = created.data["id"]
    assert_error(caller.both("GET", f"/buckets/b/collections/{cid}"), 404, 110)
    assert caller.both("GET", f"/buckets/a/collections/{cid}").data == created.data


def test_a_missing_parent_answers_404(call, caller, buckets):
    for method, path in [
        ("GET", "/buckets/nope/collections"),
        ("HEAD", "/buckets/nope/collections"),
        ("POST", "/buckets/nope/collections"),
        ("DELETE", "/buckets/nope/collections"),
        ("GET", "/buckets/nope/collections/c"),
        ("PUT", "/buckets/nope/collections/c"),
    ]:
        body = ({"data": {}},) if method in ("POST", "PUT") else ()
        rv = call(method, path, *body)
        assert rv.status == 404, (method, path)
        if method != "HEAD":
            assert rv.body["errno"] == 110
            assert rv.body["details"] == {"id": "nope", "resource_name": "bucket"}
    assert caller.direct("PUT", "/buckets/nope", {"data": {}}).status == 201
    assert caller.direct("GET", "/buckets/nope/collections").data == []


def test_every_ancestor_must_exist(call, caller, buckets):
    assert caller.direct("PUT", "/buckets/a/collections/c", {"data": {}}).status == 201
    rv = call("POST", "/buckets/a/collections/c/records", {"data": {"x": 1}})
    assert rv.status == 201
    rv = call("GET", "/buckets/a/collections/other/records")
    assert rv.body["details"] == {"id": "other", "resource_name": "collection"}
    caller.direct("DELETE", "/buckets/a")
    rv = call("GET", "/buckets/a/collections/c/records")
    assert_error(rv, 404, 110)
    assert rv.body["details"] == {"id": "a", "resource_name": "bucket"}


def test_a_parent_created_in_the_same_batch_counts(client):
    rv = client.post(
        f"{PREFIX}/batch",
        json={
            "defaults": {"method": "PUT", "body": {"data": {}}},
            "requests": [
                {"path": "/buckets/new"},
                {"path": "/buckets/new/collections/c"},
                {"path": "/buckets/new/collections/c/records/" + new_id()},
            ],
        },
    )
    assert [r["status"] for r in rv.get_json()["responses"]] == [201, 201, 201]


def test_nested_events_and_payloads_carry_the_path_variables(app, caller, buckets):
    from kiln.resource import events

    received = []
    events.subscribe(app, received.append)
    caller.direct("PUT", "/buckets/a/collections/c", {"data": {}})
    (event,) = received
    assert event.payload["bucket_id"] == "a"
    assert event.payload["collection_id"] == "c"
    assert event.payload["uri"] == "/buckets/a/collections/c"


# -- utility ---------------------------------------------------------------------------


def test_heartbeat_reports_a_working_storage(client):
    rv = client.get(f"{PREFIX}/__heartbeat__")
    assert rv.get_json()["storage"] is True


def test_unknown_records_and_urls_use_distinct_errnos(caller):
    assert_error(caller.both("GET", f"/notes/{new_id()}"), 404, 110)
    assert_error(caller.both("GET", "/nothing-here"), 404, 111)


def test_responses_are_json_with_unescaped_slashes(caller):
    record = create(caller, "/notes", {"url": "http://x/y"})
    raw = orjson.dumps(caller.both("GET", f"/notes/{record['id']}").body)
    assert b"http://x/y" in raw


# -- bodies and startup ---------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/notes", 201), ("/mushrooms", 400)])
def test_a_post_without_data_creates_an_empty_record_when_the_schema_allows_it(call, path, status):
    assert call("POST", path, {}).status == status


@pytest.mark.parametrize("value", ["1", 1.5, True, None])
def test_a_non_integer_last_modified_in_the_body_answers_400(call, value):
    rv = call("POST", "/notes", {"data": {"last_modified": value}})
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "data.last_modified"


def test_a_later_last_modified_in_the_body_is_kept_on_create(call):
    forced = int(time.time() * 1000) + 10_000_000
    assert (
        call("POST", "/notes", {"data": {"last_modified": forced}}).data["last_modified"] == forced
    )


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


def test_the_deprecated_to_parameter_works_and_says_so(client):
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    response = client.get(f"/v1/notes?_to={created['last_modified'] + 1}")
    assert [r["id"] for r in response.json["data"]] == [created["id"]]
    alert = orjson.loads(response.headers["Alert"])
    assert alert["code"] == "soft-eol"
    assert "_before" in alert["message"]
