from __future__ import annotations

import pytest

from tests.resource.conftest import assert_error, create, new_id


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
