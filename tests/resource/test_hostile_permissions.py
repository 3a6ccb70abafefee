from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

import kiln
from kiln import resource
from kiln.storage.testing import HOSTILE_STRINGS

SECRET = "hostile-secret-" + "h" * 40
HOSTILE = [s for s in HOSTILE_STRINGS if s]


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@resource.register(collection_path="/owners/{owner}/pages")
class Page(resource.ShareableResource):
    id_generator = resource.Slug


@pytest.fixture(params=["memory", "sqlite"])
def client(request, tmp_path):
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources", "tests.resource.test_hostile_permissions"],
            "storage": {"backend": request.param, "url": str(tmp_path / "h.sqlite")},
            "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
            "toadstool": {"create_principals": ["system.Authenticated"]},
            "page": {"create_principals": ["system.Authenticated"]},
        },
        configure_logging=False,
    )
    return app.test_client()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_record_ids_in_urls_never_answer_5xx(client, hostile):
    path = "/v1/toadstools/" + quote(hostile, safe="")
    valid = resource.Slug().match(hostile)
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        for headers in ({}, basic("alice")):
            response = client.open(path, method=method, json={"data": {}}, headers=headers)
            assert response.status_code < 500, (method, response.json)
            if response.status_code < 400:
                assert valid
                assert headers


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_principals_are_stored_exactly_and_grant_nobody_else(client, hostile):
    body = {"data": {"name": "x"}, "permissions": {"read": [hostile], "write": [hostile]}}
    created = client.put("/v1/toadstools/t1", json=body, headers=basic("alice"))
    assert created.status_code == 201
    assert created.json["permissions"]["read"] == [hostile]
    assert client.get("/v1/toadstools/t1", headers=basic("bob")).status_code == 403
    assert client.get("/v1/toadstools", headers=basic("bob")).json["data"] == []
    assert client.get("/v1/toadstools").status_code == 401


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_parent_ids_never_widen_a_list(client, hostile):
    assert client.put("/v1/owners/o1/pages/p1", json={}, headers=basic("alice")).status_code == 201
    path = "/v1/owners/" + quote(hostile, safe="") + "/pages"
    for headers in ({}, basic("bob")):
        response = client.get(path, headers=headers)
        # 414: a parent id longer than request.max_url_bytes allows in a URL.
        assert response.status_code in (200, 401, 403, 404, 414), response.json
        if response.status_code == 200:
            assert response.json["data"] == []


def test_a_star_in_a_parent_id_does_not_reach_other_collections(client):
    assert client.put("/v1/owners/o1/pages/p1", json={}, headers=basic("alice")).status_code == 201
    listed = client.get("/v1/owners/*/pages", headers=basic("alice"))
    assert listed.status_code == 200
    assert listed.json["data"] == []
    assert client.get("/v1/owners/o1/pages", headers=basic("alice")).json["data"][0]["id"] == "p1"
