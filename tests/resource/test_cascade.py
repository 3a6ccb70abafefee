from __future__ import annotations

import base64
import contextlib

import pytest

import kiln
from kiln.application import close_app
from tests.services import empty_storage_url

SECRET = "cascade-secret-" + "z" * 40
RECORDS = "/v1/buckets/b1/collections/c1/records"


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


OWNER = basic("owner")


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
def app(request, tmp_path):
    backend = request.param
    with contextlib.ExitStack() as stack:
        url = empty_storage_url(request, backend, str(tmp_path), stack)
        app = kiln.create_app(
            {
                "views": ["tests.resource.auth_resources"],
                "storage": {"backend": backend, "url": url},
                "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
                "bucket": {"create_principals": ["system.Authenticated"]},
            },
            configure_logging=False,
        )
        stack.callback(close_app, app)
        yield app


@pytest.fixture
def client(app):
    client = app.test_client()
    for path in (
        "/v1/buckets/b1",
        "/v1/buckets/b1/collections/c1",
        "/v1/buckets/b1/collections/c2",
        f"{RECORDS}/r1",
        f"{RECORDS}/r2",
        "/v1/buckets/b2",
        "/v1/buckets/b2/collections/c1",
        "/v1/buckets/b10",
        "/v1/buckets/b10/collections/c1",
    ):
        assert client.put(path, json={}, headers=OWNER).status_code == 201, path
    return client


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json
    return sorted(record["id"] for record in response.json["data"])


def test_deleting_a_parent_deletes_its_children_and_theirs(client):
    assert client.delete("/v1/buckets/b1", headers=OWNER).status_code == 200
    assert client.put("/v1/buckets/b1", json={}, headers=OWNER).status_code == 201
    assert ids(client.get("/v1/buckets/b1/collections", headers=OWNER)) == []
    assert client.put("/v1/buckets/b1/collections/c1", json={}, headers=OWNER).status_code == 201
    assert ids(client.get(RECORDS, headers=OWNER)) == []
    assert ids(client.get("/v1/buckets/b2/collections", headers=OWNER)) == ["c1"]
    assert ids(client.get("/v1/buckets/b10/collections", headers=OWNER)) == ["c1"]


def test_children_leave_tombstones_for_sync_clients(client):
    before = client.get(RECORDS, headers=OWNER).headers["ETag"].strip('"')
    client.delete("/v1/buckets/b1/collections/c1", headers=OWNER)
    client.put("/v1/buckets/b1/collections/c1", json={}, headers=OWNER)
    changes = client.get(f"{RECORDS}?_since={before}", headers=OWNER).json["data"]
    assert sorted((c["id"], c.get("deleted")) for c in changes) == [("r1", True), ("r2", True)]
    assert all(c["last_modified"] > int(before) for c in changes)


def test_the_permissions_of_deleted_children_are_deleted_too(app, client):
    reader = basic("reader")
    reader_id = client.get("/v1/", headers=reader).json["user"]["id"]
    shared = {"permissions": {"read": [reader_id]}}
    client.patch(f"{RECORDS}/r1", json=shared, headers=OWNER)
    assert client.get(f"{RECORDS}/r1", headers=reader).status_code == 200
    client.delete("/v1/buckets/b1", headers=OWNER)
    permission = app.extensions["kiln"].permission
    held = permission.objects_permissions(
        ["/buckets/b1/collections/c1", "/buckets/b1/collections/c1/records/r1"]
    )
    assert not any(held.values())
    client.put("/v1/buckets/b1", json={}, headers=OWNER)
    client.put("/v1/buckets/b1/collections/c1", json={}, headers=OWNER)
    client.put(f"{RECORDS}/r1", json={}, headers=OWNER)
    assert client.get(f"{RECORDS}/r1", headers=reader).status_code == 403


def test_deleting_every_parent_of_a_collection_cascades_too(client):
    response = client.delete("/v1/buckets", headers=OWNER)
    assert ids(response) == ["b1", "b10", "b2"]
    client.put("/v1/buckets/b2", json={}, headers=OWNER)
    assert ids(client.get("/v1/buckets/b2/collections", headers=OWNER)) == []


def test_a_batch_that_deletes_and_recreates_a_parent_starts_it_empty(client):
    requests = [
        {"method": "PUT", "path": "/buckets/b1/collections/c3", "body": {}},
        {"method": "DELETE", "path": "/buckets/b1"},
        {"method": "PUT", "path": "/buckets/b1", "body": {}},
        {"method": "PUT", "path": "/buckets/b1/collections/c4", "body": {}},
        {"method": "GET", "path": "/buckets/b1/collections"},
    ]
    response = client.post("/v1/batch", json={"requests": requests}, headers=OWNER)
    statuses = [answer["status"] for answer in response.json["responses"]]
    assert statuses == [201, 200, 201, 201, 200]
    listed = response.json["responses"][-1]["body"]["data"]
    assert [record["id"] for record in listed] == ["c4"]
    assert ids(client.get("/v1/buckets/b1/collections", headers=OWNER)) == ["c4"]


def test_a_batch_cannot_create_below_a_parent_it_deleted(client):
    requests = [
        {"method": "GET", "path": "/buckets/b1/collections"},
        {"method": "DELETE", "path": "/buckets/b1"},
        {"method": "PUT", "path": "/buckets/b1/collections/c5", "body": {}},
    ]
    response = client.post("/v1/batch", json={"requests": requests}, headers=OWNER)
    statuses = [answer["status"] for answer in response.json["responses"]]
    assert statuses == [200, 200, 403]  # the bucket, and its permissions, are gone
    client.put("/v1/buckets/b1", json={}, headers=OWNER)
    assert ids(client.get("/v1/buckets/b1/collections", headers=OWNER)) == []


def test_childless_records_and_records_of_unmounted_resources_delete_cleanly(app, client):
    storage = app.extensions["kiln"].storage
    storage.create("ghost", "/buckets/b1/collections/c2", {"id": "g1"})
    assert client.delete(f"{RECORDS}/r1", headers=OWNER).status_code == 200
    assert client.delete("/v1/buckets/b1/collections/c2", headers=OWNER).status_code == 200
    assert storage.list_descendants(["/buckets/b1/collections/c2"]) == []
    assert ids(client.get(RECORDS, headers=OWNER)) == ["r2"]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_resources_without_permissions_cascade_too(tmp_path, backend):
    app = kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        },
        configure_logging=False,
    )
    client = app.test_client()
    for path in ("/v1/buckets/b1", "/v1/buckets/b1/collections/c1"):
        assert client.put(path, json={}).status_code == 201
    assert client.post(RECORDS, json={}).status_code == 201
    assert client.delete("/v1/buckets/b1").status_code == 200
    client.put("/v1/buckets/b1", json={})
    assert ids(client.get("/v1/buckets/b1/collections")) == []
    client.put("/v1/buckets/b1/collections/c1", json={})
    assert ids(client.get(RECORDS)) == []
    close_app(app)
