from __future__ import annotations

import orjson
import pytest

from tests.resource.conftest import assert_error, create, mock_any_int


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


def test_the_deprecated_to_parameter_works_and_says_so(client):
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    response = client.get(f"/v1/notes?_to={created['last_modified'] + 1}")
    assert [r["id"] for r in response.json["data"]] == [created["id"]]
    alert = orjson.loads(response.headers["Alert"])
    assert alert["code"] == "soft-eol"
    assert "_before" in alert["message"]
