from __future__ import annotations

import logging

import pytest

from kiln.resource import events
from tests.resource.conftest import PREFIX
from tests.resource.sample_resources import EXPLODE


@pytest.fixture
def received(app):
    got = []
    events.subscribe(app, got.append)
    return got


def test_a_create_sends_the_new_record(client, received):
    record = client.post(f"{PREFIX}/notes", json={"data": {"a": 1}}).get_json()["data"]
    (event,) = received
    assert event.action == "create"
    assert event.resource_name == "note"
    assert event.payload == {
        "action": "create",
        "resource_name": "note",
        "uri": "/notes",
        "user_id": None,
        "timestamp": record["last_modified"],
    }
    assert event.impacted_records == [{"new": record}]


def test_an_update_sends_the_new_and_old_records(client, received):
    old = client.put(f"{PREFIX}/articles/a", json={"data": {"t": 1}}).get_json()["data"]
    new = client.patch(f"{PREFIX}/articles/a", json={"data": {"t": 2}}).get_json()["data"]
    assert [e.action for e in received] == ["create", "update"]
    update = received[1]
    assert update.payload["uri"] == "/articles/a"
    assert update.payload["article_id"] == "a"
    assert update.payload["timestamp"] == new["last_modified"]
    assert update.impacted_records == [{"new": new, "old": old}]


def test_a_put_over_an_existing_record_is_an_update(client, received):
    client.put(f"{PREFIX}/articles/a", json={"data": {"t": 1}})
    client.put(f"{PREFIX}/articles/a", json={"data": {"t": 2}})
    assert [e.action for e in received] == ["create", "update"]


def test_a_delete_sends_the_tombstone_and_the_old_record(client, received):
    old = client.put(f"{PREFIX}/articles/a", json={"data": {"t": 1}}).get_json()["data"]
    tombstone = client.delete(f"{PREFIX}/articles/a").get_json()["data"]
    delete = received[-1]
    assert delete.action == "delete"
    assert delete.impacted_records == [{"new": tombstone, "old": old}]


def test_a_collection_delete_sends_one_event_with_every_record(client, received):
    a = client.post(f"{PREFIX}/notes", json={"data": {"k": 1}}).get_json()["data"]
    b = client.post(f"{PREFIX}/notes", json={"data": {"k": 1}}).get_json()["data"]
    client.post(f"{PREFIX}/notes", json={"data": {"k": 2}})
    tombstones = client.delete(f"{PREFIX}/notes?k=1").get_json()["data"]
    delete = received[-1]
    assert delete.payload["uri"] == "/notes"
    assert sorted(r["old"]["id"] for r in delete.impacted_records) == sorted([a["id"], b["id"]])
    assert sorted(r["new"]["id"] for r in delete.impacted_records) == sorted(
        t["id"] for t in tombstones
    )
    assert delete.payload["timestamp"] == max(t["last_modified"] for t in tombstones)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/mushrooms", {"data": {"size": 1}}),
        ("POST", "/articles", {"data": {"title": EXPLODE}}),
        ("GET", "/notes", None),
        ("PATCH", "/articles/same", {"data": {"t": 1}}),
        ("POST", "/articles", {"data": {"id": "same"}}),
        ("DELETE", "/notes?k=nothing", None),
    ],
)
def test_reads_no_ops_and_failed_requests_send_nothing(client, app, method, path, body):
    client.put(f"{PREFIX}/articles/same", json={"data": {"t": 1}})
    got = []
    events.subscribe(app, got.append)
    kwargs = {"json": body} if body is not None else {}
    client.open(PREFIX + path, method=method, **kwargs)
    assert got == []


def test_a_failed_batch_sends_nothing(client, received):
    rv = client.post(
        f"{PREFIX}/batch",
        json={
            "defaults": {"method": "POST", "path": "/articles"},
            "requests": [
                {"body": {"data": {"title": "ok"}}},
                {"body": {"data": {"title": EXPLODE}}},
            ],
        },
    )
    assert rv.status_code == 500
    assert received == []


def test_a_batch_sends_one_merged_event_per_resource_parent_and_action(client, received):
    client.put(f"{PREFIX}/buckets/a", json={"data": {}})
    client.put(f"{PREFIX}/buckets/b", json={"data": {}})
    received.clear()
    rv = client.post(
        f"{PREFIX}/batch",
        json={
            "defaults": {"method": "PUT", "body": {"data": {}}},
            "requests": [
                {"path": "/buckets/a/collections/c1"},
                {"path": "/buckets/a/collections/c2"},
                {"path": "/buckets/b/collections/c1"},
                {"path": "/buckets/a/collections/c1", "body": {"data": {"x": 1}}},
                {"path": "/notes/bad-id"},
                {"method": "POST", "path": "/notes"},
            ],
        },
    )
    statuses = [r["status"] for r in rv.get_json()["responses"]]
    assert statuses == [201, 201, 201, 200, 400, 201]
    keys = [(e.resource_name, e.payload.get("bucket_id"), e.action) for e in received]
    assert sorted(keys, key=str) == sorted(
        [
            ("collection", "a", "create"),
            ("collection", "b", "create"),
            ("collection", "a", "update"),
            ("note", None, "create"),
        ],
        key=str,
    )
    create_a = next(
        e for e in received if e.payload.get("bucket_id") == "a" and e.action == "create"
    )
    assert [r["new"]["id"] for r in create_a.impacted_records] == ["c1", "c2"]
    assert create_a.payload["uri"] == "/buckets/a/collections"
    assert "collection_id" not in create_a.payload
    created = [r["new"]["last_modified"] for r in create_a.impacted_records]
    assert create_a.payload["timestamp"] == max(created)
    create_b = next(e for e in received if e.payload.get("bucket_id") == "b")
    assert create_b.payload["uri"] == "/buckets/b/collections/c1"
    assert create_b.payload["collection_id"] == "c1"


def test_subscribers_filter_by_actions_and_resources(app, client):
    deletes, notes, both = [], [], []
    events.subscribe(app, deletes.append, actions=("delete",))
    events.subscribe(app, notes.append, resources=("note",))
    events.subscribe(app, both.append, actions=["create"], resources=["article"])
    note = client.post(f"{PREFIX}/notes", json={"data": {}}).get_json()["data"]
    client.put(f"{PREFIX}/articles/a", json={"data": {}})
    client.delete(f"{PREFIX}/notes/{note['id']}")
    assert [(e.resource_name, e.action) for e in deletes] == [("note", "delete")]
    assert [e.action for e in notes] == ["create", "delete"]
    assert [(e.resource_name, e.action) for e in both] == [("article", "create")]


def test_subscribe_works_as_a_decorator(app, client):
    got = []

    @events.subscribe(app, actions=("create",))
    def listener(event):
        got.append(event)

    client.post(f"{PREFIX}/notes", json={"data": {}})
    assert len(got) == 1
    assert callable(listener)


def test_subscribing_to_an_unknown_action_is_refused(app):
    with pytest.raises(ValueError, match="read"):
        events.subscribe(app, print, actions=("read",))


def test_a_listener_that_raises_is_logged_and_breaks_nothing(app, client, caplog):
    got = []

    def broken(event):
        raise RuntimeError("listener broke")

    events.subscribe(app, broken)
    events.subscribe(app, got.append)
    with caplog.at_level(logging.ERROR, logger="kiln.events"):
        rv = client.post(f"{PREFIX}/notes", json={"data": {}})
    assert rv.status_code == 201
    assert len(got) == 1
    assert "listener broke" in caplog.text
    assert client.get(f"{PREFIX}/notes").get_json()["data"] == [rv.get_json()["data"]]


def test_events_are_sent_after_the_commit(app, client):
    seen = []

    def listener(event):
        # Another app on the same storage would only see committed data.
        seen.append(client.get(f"{PREFIX}/notes").get_json()["data"])

    events.subscribe(app, listener)
    record = client.post(f"{PREFIX}/notes", json={"data": {}}).get_json()["data"]
    assert seen == [[record]]
