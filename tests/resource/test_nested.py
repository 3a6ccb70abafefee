from __future__ import annotations

import pytest

from tests.resource.conftest import PREFIX, assert_error, new_id


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
