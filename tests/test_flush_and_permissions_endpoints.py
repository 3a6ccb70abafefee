"""``POST /__flush__`` and ``GET /v1/permissions`` (#14)."""

from __future__ import annotations

import base64

import pytest

import kiln
from kiln._state import state_of

SECRET = "endpoints-secret-" + "z" * 40


def basic(user: str, password: str = "pw") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def build(tmp_path, backend="memory", **tree):
    config = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "permission": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "cache": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
        "bucket": {"create_principals": ["system.Authenticated"]},
        "toadstool": {"create_principals": ["system.Authenticated"]},
        **tree,
    }
    return kiln.create_app(config, configure_logging=False)


def test_both_endpoints_are_off_by_default(tmp_path):
    client = build(tmp_path).test_client()
    assert client.post("/__flush__").status_code in (404, 405)
    assert client.post("/v1/__flush__").status_code == 404
    assert client.get("/v1/permissions", headers=basic("a")).status_code == 404
    assert client.get("/v1/").json["capabilities"] == {}


def test_the_hello_view_announces_them(tmp_path):
    app = build(tmp_path, flush_endpoint={"enabled": True}, permissions_endpoint={"enabled": True})
    capabilities = app.test_client().get("/v1/").json["capabilities"]
    assert sorted(capabilities) == ["flush_endpoint", "permissions_endpoint"]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("path", ["/__flush__", "/v1/__flush__"])
def test_flush_empties_storage_permissions_and_cache(tmp_path, backend, path):
    app = build(tmp_path, backend, flush_endpoint={"enabled": True})
    client = app.test_client()
    assert client.put("/v1/buckets/b", json={}, headers=basic("a")).status_code == 201
    state = state_of(app)
    state.permission.add_user_principal("someone", "/buckets/b/groups/g")
    state.cache.set("key", "value", 60)
    answer = client.post(path)
    assert (answer.status_code, answer.json) == (202, {})
    assert client.get("/v1/buckets", headers=basic("a")).json["data"] == []
    assert state.permission.object_permissions("/buckets/b") == {}
    assert state.permission.user_principals("someone") == set()
    assert state.cache.get("key") is None


def test_flush_without_backends_answers_too(tmp_path):
    app = kiln.create_app({"flush_endpoint": {"enabled": True}}, configure_logging=False)
    assert app.test_client().post("/__flush__").status_code == 202


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_permissions_lists_every_object_the_caller_holds_a_permission_on(tmp_path, backend):
    app = build(tmp_path, backend, permissions_endpoint={"enabled": True})
    client = app.test_client()
    alice = client.get("/v1/", headers=basic("alice")).json["user"]["id"]
    client.put("/v1/buckets/b", json={}, headers=basic("bob"))
    client.put(
        "/v1/buckets/b/collections/c",
        json={"permissions": {"read": [alice]}},
        headers=basic("bob"),
    )
    client.put(
        "/v1/buckets/b/collections/c/records/r",
        json={"permissions": {"write": [alice]}},
        headers=basic("bob"),
    )
    client.put("/v1/toadstools/t", json={}, headers=basic("bob"))
    answer = client.get("/v1/permissions", headers=basic("alice"))
    assert answer.status_code == 200
    assert answer.json["data"] == [
        {
            "uri": "/buckets/b/collections/c",
            "resource_name": "collection",
            "id": "c",
            "collection_id": "c",
            "bucket_id": "b",
            "permissions": ["read"],
        },
        {
            "uri": "/buckets/b/collections/c/records/r",
            "resource_name": "record",
            "id": "r",
            "record_id": "r",
            "bucket_id": "b",
            "collection_id": "c",
            "permissions": ["read", "write"],
        },
    ]
    bob = client.get("/v1/permissions", headers=basic("bob")).json["data"]
    by_uri = {entry["uri"]: entry["permissions"] for entry in bob}
    # write implies read and the creation of the children.
    assert by_uri["/buckets/b"] == ["collection:create", "read", "write"]
    assert by_uri["/toadstools/t"] == ["read", "write"]
    narrowed = client.get("/v1/permissions?resource_name=bucket", headers=basic("bob")).json
    assert [entry["uri"] for entry in narrowed["data"]] == ["/buckets/b"]
    excluded = client.get(
        "/v1/permissions?exclude_resource_name=record,collection", headers=basic("bob")
    ).json["data"]
    assert [entry["uri"] for entry in excluded] == ["/buckets/b", "/toadstools/t"]


def test_permissions_skip_objects_of_no_mounted_resource(tmp_path):
    app = build(tmp_path, permissions_endpoint={"enabled": True})
    client = app.test_client()
    alice = client.get("/v1/", headers=basic("alice")).json["user"]["id"]
    state_of(app).permission.add_principal_to_ace("/elsewhere/x", "read", alice)
    assert client.get("/v1/permissions", headers=basic("alice")).json["data"] == []


def test_permissions_show_the_callers_own_account(tmp_path):
    app = build(
        tmp_path,
        auth={"policies": ["accounts"], "userid_hmac_secret": SECRET},
        accounts={"create_principals": ["system.Everyone"]},
        permissions_endpoint={"enabled": True},
    )
    client = app.test_client()
    created = client.put("/v1/accounts/ann", json={"data": {"password": "pw-ann-123"}})
    assert created.status_code == 201, created.json
    entries = client.get("/v1/permissions", headers=basic("ann", "pw-ann-123")).json["data"]
    assert entries == [
        {
            "uri": "/accounts/ann",
            "resource_name": "account",
            "id": "ann",
            "account_id": "ann",
            "permissions": ["read", "write"],
        }
    ]


def test_permissions_without_a_permission_backend_list_nothing(tmp_path):
    app = kiln.create_app({"permissions_endpoint": {"enabled": True}}, configure_logging=False)
    assert app.test_client().get("/v1/permissions").json == {"data": []}
