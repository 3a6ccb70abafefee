from __future__ import annotations

import pytest

from kiln.errors import ERRORS, HTTPError
from kiln.resource.views import Authorization, set_authorizer


@pytest.fixture
def seen(app):
    calls: list[Authorization] = []

    def authorizer(request: Authorization) -> None:
        calls.append(request)
        if request.method == "DELETE":
            raise HTTPError(403, ERRORS.FORBIDDEN, "This user cannot access this resource.")

    set_authorizer(app, authorizer)
    return calls


def test_without_an_authorizer_every_request_is_allowed(client):
    created = client.post("/v1/notes", json={"data": {"name": "a"}})
    assert created.status_code == 201
    assert client.delete(f"/v1/notes/{created.json['data']['id']}").status_code == 200


def test_the_authorizer_is_asked_before_every_resource_request(client, seen):
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    client.get(f"/v1/notes/{created['id']}")
    client.get("/v1/notes")
    assert [(a.method, a.endpoint, a.object_id) for a in seen] == [
        ("POST", "collection", None),
        ("GET", "record", created["id"]),
        ("GET", "collection", None),
    ]
    assert {a.resource_name for a in seen} == {"note"}
    assert seen[1].context.path == {"id": created["id"]}


def test_a_denial_is_the_error_envelope_and_writes_nothing(client, seen):
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    denied = client.delete(f"/v1/notes/{created['id']}")
    assert denied.status_code == 403
    assert denied.json["errno"] == 121
    assert client.get(f"/v1/notes/{created['id']}").status_code == 200
    denied_all = client.delete("/v1/notes")
    assert denied_all.status_code == 403
    assert len(client.get("/v1/notes").json["data"]) == 1


def test_batch_sub_requests_ask_the_authorizer_exactly_as_direct_requests(client, seen):
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    direct = list(seen)
    seen.clear()
    response = client.post(
        "/v1/batch",
        json={
            "requests": [
                {"method": "POST", "path": "/notes", "body": {"data": {"name": "b"}}},
                {"method": "DELETE", "path": f"/notes/{created['id']}"},
            ]
        },
    )
    assert [r["status"] for r in response.json["responses"]] == [201, 403]
    assert [(a.method, a.endpoint) for a in seen] == [("POST", "collection"), ("DELETE", "record")]
    assert direct[0].method == seen[0].method == "POST"
    assert client.get(f"/v1/notes/{created['id']}").status_code == 200


def test_removing_the_authorizer_allows_everything_again(app, client, seen):
    set_authorizer(app, None)
    created = client.post("/v1/notes", json={"data": {"name": "a"}}).json["data"]
    assert client.delete(f"/v1/notes/{created['id']}").status_code == 200
    assert seen == []
