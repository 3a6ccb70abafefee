from __future__ import annotations

import base64
import logging

import pytest

import kiln
from kiln.auth.accounts import AccountsPolicy

CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
PASSWORD = "correct-horse-SENTINEL"


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(params=["memory", "sqlite"])
def client(request, tmp_path):
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": {"backend": request.param, "url": str(tmp_path / "a.sqlite")},
            "auth": {"policies": ["accounts"]},
            "accounts": {
                "create_principals": ["system.Everyone"],
                "admin_principals": ["account:admin"],
                "argon2": CHEAP,
            },
        },
        configure_logging=False,
    )
    client = app.test_client()
    for name in ("admin", "alice"):
        response = client.post("/v1/accounts", json={"data": {"id": name, "password": PASSWORD}})
        assert response.status_code == 201
    return client


def test_sign_up_answers_the_account_without_its_password(client):
    response = client.post(
        "/v1/accounts", json={"data": {"id": "bob", "password": PASSWORD, "email": "b@x.org"}}
    )
    assert response.status_code == 201
    assert response.json["data"]["id"] == "bob"
    assert response.json["data"]["email"] == "b@x.org"
    assert "password" not in response.json["data"]
    assert PASSWORD not in response.get_data(as_text=True)
    hello = client.get("/v1/", headers=basic("bob")).json
    assert hello["user"]["id"] == "account:bob"
    assert hello["capabilities"]["accounts"]["description"] == "Manage user accounts."


def test_signing_up_twice_is_a_conflict(client):
    response = client.post("/v1/accounts", json={"data": {"id": "alice", "password": PASSWORD}})
    assert response.status_code == 409


def identified(client, headers: dict[str, str]) -> str | None:
    response = client.get("/v1/", headers=headers)
    assert response.status_code == 200
    user = response.json.get("user")
    return user["id"] if user else None


def test_a_wrong_password_or_an_unknown_user_is_anonymous(client):
    assert identified(client, basic("alice")) == "account:alice"
    assert identified(client, basic("alice", "wrong-password")) is None
    assert identified(client, basic("nobody")) is None
    response = client.get("/v1/accounts/alice", headers=basic("alice", "wrong-password"))
    assert response.status_code == 401
    assert response.json["errno"] == 104
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_signing_up_with_ones_own_credentials_creates_the_account(client):
    response = client.put(
        "/v1/accounts/user",
        json={"data": {"password": "p4ssw0rd"}},
        headers=basic("user", "p4ssw0rd"),
    )
    assert response.status_code == 201
    assert response.json["data"]["id"] == "user"
    assert identified(client, basic("user", "p4ssw0rd")) == "account:user"
    again = client.put(
        "/v1/accounts/user",
        json={"data": {"password": "p4ssw0rd"}},
        headers=basic("user", "p4ssw0rd"),
    )
    assert again.status_code == 200


def test_a_strict_service_answers_401_to_wrong_credentials(tmp_path):
    app = kiln.create_app(
        {
            "storage": {"backend": "memory"},
            "auth": {"policies": ["accounts"]},
            "accounts": {
                "create_principals": ["system.Everyone"],
                "reject_invalid_credentials": True,
                "argon2": CHEAP,
            },
        },
        configure_logging=False,
    )
    client = app.test_client()
    client.post("/v1/accounts", json={"data": {"id": "alice", "password": PASSWORD}})
    response = client.get("/v1/", headers=basic("alice", "wrong-password"))
    assert response.status_code == 401
    assert response.json["errno"] == 105
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert client.get("/v1/", headers=basic("nobody")).status_code == 401
    signup = client.put(
        "/v1/accounts/bob", json={"data": {"password": PASSWORD}}, headers=basic("bob")
    )
    assert signup.status_code == 401


def test_an_owner_reads_their_account_and_nobody_else_does(client):
    client.post("/v1/accounts", json={"data": {"id": "bob", "password": PASSWORD}})
    assert client.get("/v1/accounts/alice", headers=basic("alice")).json["data"]["id"] == "alice"
    assert client.get("/v1/accounts/alice", headers=basic("bob")).status_code == 403
    assert client.get("/v1/accounts/alice").status_code == 401
    assert client.get("/v1/accounts/alice", headers=basic("admin")).status_code == 200
    assert client.get("/v1/accounts/ghost", headers=basic("admin")).status_code == 404


def test_listing_shows_an_account_its_own_and_an_administrator_every_one(client):
    own = client.get("/v1/accounts", headers=basic("alice")).json["data"]
    assert [a["id"] for a in own] == ["alice"]
    every = client.get("/v1/accounts", headers=basic("admin")).json["data"]
    assert sorted(a["id"] for a in every) == ["admin", "alice"]
    assert all("password" not in a for a in every)
    assert client.get("/v1/accounts").status_code == 401


def test_put_signs_up_a_new_account(client):
    response = client.put("/v1/accounts/carol", json={"data": {"password": PASSWORD}})
    assert response.status_code == 201
    assert client.get("/v1/", headers=basic("carol")).status_code == 200
    mismatch = client.put("/v1/accounts/dave", json={"data": {"id": "eve", "password": PASSWORD}})
    assert mismatch.status_code == 400


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_owner_changes_their_password(client, method):
    new = "a-brand-new-password"
    response = client.open(
        "/v1/accounts/alice",
        method=method,
        json={"data": {"password": new}},
        headers=basic("alice"),
    )
    assert response.status_code == 200
    assert identified(client, basic("alice")) is None
    assert identified(client, basic("alice", new)) == "account:alice"


def test_an_administrator_resets_a_password_and_a_stranger_cannot(client):
    client.post("/v1/accounts", json={"data": {"id": "bob", "password": PASSWORD}})
    body = {"data": {"password": "reset-by-admin"}}
    assert client.patch("/v1/accounts/alice", json=body, headers=basic("bob")).status_code == 403
    assert client.patch("/v1/accounts/alice", json=body, headers=basic("admin")).status_code == 200
    assert identified(client, basic("alice", "reset-by-admin")) == "account:alice"


def test_an_owner_deletes_their_account(client):
    response = client.delete("/v1/accounts/alice", headers=basic("alice"))
    assert response.status_code == 200
    assert response.json["data"]["deleted"] is True
    assert identified(client, basic("alice")) is None


def test_sign_up_is_closed_unless_create_principals_allow_it(tmp_path):
    app = kiln.create_app(
        {"storage": {"backend": "memory"}, "auth": {"policies": ["accounts"]}},
        configure_logging=False,
    )
    response = app.test_client().post(
        "/v1/accounts", json={"data": {"id": "bob", "password": PASSWORD}}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"data": {"id": "x", "password": "long-enough"}}', "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b'{"data": [], "x": 1}', "application/json", 400),
        (b'{"data": []}', "application/json", 400),
        (b'{"data": {"id": "bob"}}', "application/json", 400),
        (b'{"data": {"id": 3, "password": "long-enough"}}', "application/json", 400),
        (b'{"data": {"id": "bob", "password": "short"}}', "application/json", 400),
        (b'{"data": {"id": "b:ob", "password": "long-enough"}}', "application/json", 400),
    ],
)
def test_malformed_sign_ups_are_400s_that_say_what_is_wrong(client, body, content_type, status):
    response = client.post("/v1/accounts", data=body, content_type=content_type)
    assert response.status_code == status
    assert response.json["message"]


def test_no_password_reaches_a_response_or_a_log_line(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/accounts", json={"data": {"id": "bob", "password": PASSWORD}})
        client.get("/v1/", headers=basic("bob"))
        client.get("/v1/", headers=basic("bob", "wrong-" + PASSWORD))
        answers = [
            client.get("/v1/accounts/bob", headers=basic("bob")),
            client.patch(
                "/v1/accounts/bob",
                json={"data": {"password": PASSWORD + "2"}},
                headers=basic("bob"),
            ),
        ]
    for answer in answers:
        assert PASSWORD not in answer.get_data(as_text=True)
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert PASSWORD not in logged
    assert base64.b64encode(f"bob:{PASSWORD}".encode()).decode() not in logged


class InvitationOnlyAccounts(AccountsPolicy):
    def may_create(self, principals):
        return "system.Authenticated" in principals or super().may_create(principals)


def test_a_subclass_of_the_accounts_policy_loads_by_dotted_path_and_mounts_the_endpoints():
    app = kiln.create_app(
        {
            "storage": {"backend": "memory"},
            "auth": {"policies": [f"{__name__}.InvitationOnlyAccounts"]},
            "accounts": {"argon2": CHEAP, "admin_principals": ["account:admin"]},
        },
        configure_logging=False,
    )
    client = app.test_client()
    body = {"data": {"id": "bob", "password": PASSWORD}}
    assert client.post("/v1/accounts", json=body).status_code == 401
    store = next(p for p in app.extensions["kiln"].auth_policies).store
    store.create("admin", PASSWORD)
    assert client.post("/v1/accounts", json=body, headers=basic("admin")).status_code == 201
    assert identified(client, basic("bob")) == "account:bob"
