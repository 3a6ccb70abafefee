from __future__ import annotations

import base64
import logging
import threading

import pytest

import kiln
from kiln.auth.web import current_identity, identity_fields
from tests.auth.test_policies import BearerTokenPolicy

SECRET = "web-secret-" + "k" * 40
TOKENS = {"t-alice": "alice", "t-bob": "bob", "t-hostile": "'%_*\\ 🍄"}


class CountingBearer(BearerTokenPolicy):
    calls: list[str] = []
    lock = threading.Lock()

    def authenticated_userid(self, headers):
        with self.lock:
            CountingBearer.calls.append(headers.get("Authorization", ""))
        return super().authenticated_userid(headers)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_app(tmp_path, **tree):
    config = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": "memory"},
        "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
        "toadstool": {"create_principals": ["system.Authenticated"]},
    }
    for key, value in tree.items():
        config[key] = value
    return kiln.create_app(config, configure_logging=False)


@pytest.fixture
def bearer_app(tmp_path):
    CountingBearer.calls = []
    return make_app(
        tmp_path,
        auth={"policies": ["tests.auth.test_web.CountingBearer"], "bearer": {"tokens": TOKENS}},
    )


def test_the_hello_view_shows_the_user_and_principals_when_authenticated(tmp_path):
    client = make_app(tmp_path).test_client()
    assert "user" not in client.get("/v1/").json
    user = client.get("/v1/", headers=basic("alice", "pw")).json["user"]
    assert user["id"].startswith("basicauth:")
    assert user["principals"] == sorted([user["id"], "system.Authenticated", "system.Everyone"])


def test_groups_from_the_permission_backend_are_principals_and_grant_access(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    alice = client.get("/v1/", headers=basic("alice", "pw")).json["user"]["id"]
    bob = client.get("/v1/", headers=basic("bob", "pw")).json["user"]["id"]
    created = client.put(
        "/v1/toadstools/t1",
        json={"permissions": {"read": ["/groups/friends"]}},
        headers=basic("alice", "pw"),
    )
    assert created.status_code == 201
    assert client.get("/v1/toadstools/t1", headers=basic("bob", "pw")).status_code == 403
    app.extensions["kiln"].permission.add_user_principal(bob, "/groups/friends")
    hello = client.get("/v1/", headers=basic("bob", "pw")).json["user"]
    assert "/groups/friends" in hello["principals"]
    assert client.get("/v1/toadstools/t1", headers=basic("bob", "pw")).status_code == 200
    assert alice != bob


def test_a_wrong_token_answers_401_with_the_policy_challenge(bearer_app):
    response = bearer_app.test_client().get("/v1/", headers=bearer("nope"))
    assert response.status_code == 401
    assert response.json["errno"] == 105
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="kiln"'


def test_a_permission_denial_to_an_anonymous_caller_carries_the_challenge(tmp_path):
    response = make_app(tmp_path).test_client().get("/v1/toadstools")
    assert response.status_code == 401
    assert response.json["errno"] == 104
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_a_policy_without_challenge_sends_none(tmp_path):
    app = make_app(tmp_path, auth={"policies": ["tests.auth.test_web.SilentPolicy"]})
    response = app.test_client().get("/v1/toadstools")
    assert response.status_code == 401
    assert "WWW-Authenticate" not in response.headers


class SilentPolicy(BearerTokenPolicy):
    name = "silent"

    def challenge(self):
        return None


def test_authenticated_responses_are_never_stored_by_caches(tmp_path):
    client = make_app(tmp_path).test_client()
    anonymous = client.get("/v1/")
    assert "no-store" not in anonymous.headers["Cache-Control"]
    mine = client.get("/v1/", headers=basic("alice", "pw"))
    assert mine.headers["Cache-Control"] == "no-cache, no-store"
    records = client.get("/v1/toadstools", headers=basic("alice", "pw"))
    assert "no-store" in records.headers["Cache-Control"]


def test_a_batch_authenticates_its_credentials_once(bearer_app):
    client = bearer_app.test_client()
    requests = [{"method": "GET", "path": "/toadstools"}] * 5
    response = client.post("/v1/batch", json={"requests": requests}, headers=bearer("t-alice"))
    assert [r["status"] for r in response.json["responses"]] == [200] * 5
    assert CountingBearer.calls == ["Bearer t-alice"]


def test_a_sub_request_with_other_credentials_is_authenticated_on_its_own(bearer_app):
    client = bearer_app.test_client()
    requests = [
        {"method": "POST", "path": "/toadstools", "body": {"data": {"name": "a"}}},
        {"method": "GET", "path": "/toadstools", "headers": bearer("t-bob")},
        {"method": "GET", "path": "/toadstools"},
    ]
    response = client.post("/v1/batch", json={"requests": requests}, headers=bearer("t-alice"))
    first, second, third = response.json["responses"]
    assert first["status"] == 201
    assert second["body"]["data"] == []
    assert [r["id"] for r in third["body"]["data"]] == [first["body"]["data"]["id"]]
    assert CountingBearer.calls == ["Bearer t-alice", "Bearer t-bob"]


def test_wrong_credentials_are_tried_once_per_batch(bearer_app):
    client = bearer_app.test_client()
    requests = [{"method": "GET", "path": "/toadstools", "headers": bearer("guess")}] * 4
    response = client.post("/v1/batch", json={"requests": requests})
    assert [r["status"] for r in response.json["responses"]] == [401] * 4
    # The batch itself is anonymous; its four sub-requests cost one try.
    assert CountingBearer.calls == ["", "Bearer guess"]


def test_the_summary_log_carries_the_user_id_and_policy(tmp_path, caplog):
    app = make_app(tmp_path)
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="request.summary"):
        client.get("/v1/", headers=basic("alice", "pw"))
        client.get("/v1/")
    authenticated, anonymous = (r.fields for r in caplog.records if r.name == "request.summary")
    assert authenticated["uid"].startswith("basicauth:")
    assert authenticated["authn_type"] == "basicauth"
    assert (anonymous["uid"], anonymous["authn_type"]) == (None, None)


def test_identity_fields_of_an_environ_without_identity_are_empty():
    assert identity_fields({}) == (None, None)


def test_the_permission_backend_has_a_heartbeat(tmp_path):
    response = make_app(tmp_path).test_client().get("/__heartbeat__")
    assert response.status_code == 200
    assert response.json["permission"] is True


def test_without_initialize_on_startup_the_permission_schema_is_left_to_migrate(tmp_path):
    url = str(tmp_path / "fresh.sqlite")
    app = make_app(
        tmp_path, storage={"backend": "sqlite", "url": url, "initialize_on_startup": False}
    )
    backend = app.extensions["kiln"].permission
    assert backend.initialize_schema(dry_run=True) != []


def test_no_policies_means_every_request_is_anonymous(tmp_path):
    app = make_app(tmp_path, auth={"policies": []})
    with app.test_request_context("/v1/", headers=basic("alice", "pw")):
        app.preprocess_request()
        assert current_identity() is None
    response = app.test_client().get("/v1/toadstools", headers=basic("alice", "pw"))
    assert response.status_code == 401


def test_hostile_user_ids_are_exact_principals_never_patterns(bearer_app):
    client = bearer_app.test_client()
    hostile = "bearer:" + TOKENS["t-hostile"]
    created = client.put(
        "/v1/toadstools/t1",
        json={"data": {"name": "x"}, "permissions": {"read": [hostile]}},
        headers=bearer("t-alice"),
    )
    assert created.status_code == 201
    assert created.json["permissions"]["read"] == [hostile]
    assert client.get("/v1/toadstools/t1", headers=bearer("t-hostile")).status_code == 200
    assert client.get("/v1/toadstools/t1", headers=bearer("t-bob")).status_code == 403
    listed = client.get("/v1/toadstools", headers=bearer("t-hostile")).json["data"]
    assert [r["id"] for r in listed] == ["t1"]
    assert client.get("/v1/toadstools", headers=bearer("t-bob")).json["data"] == []


def test_the_hmac_secret_and_passwords_reach_no_response_or_log_line(tmp_path, caplog):
    client = make_app(tmp_path).test_client()
    password = "SENTINEL-basic-password"
    with caplog.at_level(logging.DEBUG):
        bodies = [
            client.get("/v1/", headers=basic("alice", password)).get_data(as_text=True),
            client.get("/v1/toadstools", headers=basic("alice", password)).get_data(as_text=True),
            client.get("/v1/toadstools").get_data(as_text=True),
            client.get("/__heartbeat__").get_data(as_text=True),
        ]
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert logged
    for text in [*bodies, logged]:
        assert SECRET not in text
        assert password not in text


def test_a_view_that_already_forbids_storing_keeps_its_cache_control(tmp_path):
    app = make_app(tmp_path)

    def private():
        return "", 204, {"Cache-Control": "private, no-store"}

    app.add_url_rule("/private", "private", private)
    response = app.test_client().get("/private", headers=basic("alice", "pw"))
    assert response.headers["Cache-Control"] == "private, no-store"
