"""examples/kinto: a Kinto-compatible service on kiln's public API (#14).

``make kinto-compat`` runs kinto-http's functional suite against it; these
tests check what the suite does not: group membership, the Kinto settings
translation, and that the example uses no private kiln name.
"""

from __future__ import annotations

import ast
import base64
import json
import pathlib
import subprocess
import sys

import pytest
from examples.kinto.kinto_ini import translate

import kiln
from kiln._state import state_of
from kiln.config import Configuration
from tests.pgschema import fresh_schema

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "kinto"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def kiln_imports(path: pathlib.Path) -> list[str]:
    """Every kiln name ``path`` imports, as ``module`` or ``module.name``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.split(".")[0] == "kiln"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kiln":
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_example_imports_no_private_kiln_name():
    imported = [name for path in sorted(EXAMPLE.rglob("*.py")) for name in kiln_imports(path)]
    assert "kiln.resource.events" in imported  # the check sees the imports
    assert [name for name in imported if any(p.startswith("_") for p in name.split("."))] == []


def test_kiln_imports_sees_private_names(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import kiln._state\nfrom kiln.auth import _secret\nimport os\n")
    assert kiln_imports(module) == ["kiln._state", "kiln.auth._secret"]


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param != "postgresql":
        yield {"backend": request.param, "url": str(tmp_path / "k.sqlite")}
        return
    with fresh_schema(request.getfixturevalue("postgresql_url")) as url:
        yield {"backend": "postgresql", "url": url}


@pytest.fixture
def client(storage, tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent.parent)
    config = Configuration(paths=[str(EXAMPLE / "config.yaml")], environ={}).config
    config["storage"] = storage
    config["accounts"]["argon2"] = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}
    config["attachments"]["base_path"] = str(tmp_path / "files")
    app = kiln.create_app(config, configure_logging=False)
    client = app.test_client()
    for name in ("owner", "alice", "bob"):
        answer = client.put(f"/v1/accounts/{name}", json={"data": {"password": f"{name}-password"}})
        assert answer.status_code == 201, answer.json
    yield client
    state_of(app).close()


def principals(client, name):
    return client.get("/v1/", headers=basic(name, f"{name}-password")).json["user"]["principals"]


def test_group_members_hold_the_groups_principal(client):
    owner = basic("owner", "owner-password")
    assert client.put("/v1/buckets/b", json={}, headers=owner).status_code == 201
    group = "/buckets/b/groups/readers"
    client.put(
        "/v1/buckets/b/collections/c",
        json={"permissions": {"read": [group]}},
        headers=owner,
    )
    answer = client.put(f"/v1{group}", json={"data": {"members": ["account:alice"]}}, headers=owner)
    assert answer.status_code == 201
    assert group in principals(client, "alice")
    assert group not in principals(client, "bob")
    alice = basic("alice", "alice-password")
    assert client.get("/v1/buckets/b/collections/c", headers=alice).status_code == 200
    # Membership changes with the group, in the same request.
    client.patch(f"/v1{group}", json={"data": {"members": ["account:bob"]}}, headers=owner)
    assert group not in principals(client, "alice")
    assert group in principals(client, "bob")
    assert client.get("/v1/buckets/b/collections/c", headers=alice).status_code == 403
    client.delete(f"/v1{group}", headers=owner)
    assert group not in principals(client, "bob")


def test_deleting_a_bucket_takes_its_groups_principals_away(client):
    owner = basic("owner", "owner-password")
    client.put("/v1/buckets/b", json={}, headers=owner)
    client.put("/v1/buckets/other", json={}, headers=owner)
    for uri in ("/buckets/b/groups/g", "/buckets/other/groups/g"):
        client.put(f"/v1{uri}", json={"data": {"members": ["account:alice"]}}, headers=owner)
    assert client.delete("/v1/buckets/b", headers=owner).status_code == 200
    held = principals(client, "alice")
    assert "/buckets/b/groups/g" not in held
    assert "/buckets/other/groups/g" in held
    # A bucket without groups: nothing to take.
    client.put("/v1/buckets/empty", json={}, headers=owner)
    assert client.delete("/v1/buckets/empty", headers=owner).status_code == 200


def test_a_group_without_members_gets_an_empty_list(client):
    owner = basic("owner", "owner-password")
    client.put("/v1/buckets/b", json={}, headers=owner)
    answer = client.put("/v1/buckets/b/groups/g", json={"data": {}}, headers=owner)
    assert answer.json["data"]["members"] == []


def test_records_get_uuid_ids_or_the_clients(client):
    owner = basic("owner", "owner-password")
    client.put("/v1/buckets/b", json={}, headers=owner)
    client.put("/v1/buckets/b/collections/c", json={}, headers=owner)
    created = client.post("/v1/buckets/b/collections/c/records", json={}, headers=owner)
    assert len(created.json["data"]["id"]) == 36
    named = client.put("/v1/buckets/b/collections/c/records/abc", json={}, headers=owner)
    assert named.status_code == 201


def test_the_permissions_endpoint_and_the_flush_setting(client):
    owner = basic("owner", "owner-password")
    client.put("/v1/buckets/b", json={}, headers=owner)
    uris = [entry["uri"] for entry in client.get("/v1/permissions", headers=owner).json["data"]]
    assert uris == ["/accounts/owner", "/buckets/b"]
    assert client.post("/v1/__flush__").status_code == 404  # off unless a test deployment


KINTO_INI = """\
[app:main]
use = egg:kinto
kinto.userid_hmac_secret = b4c96a8d91846eb4692291d88fe5a97d
kinto.paginate_by = 5
kinto.includes = kinto.plugins.flush
                 kinto.plugins.accounts
                 kinto_attachment
                 kinto_signer
multiauth.policies = account
multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy
kinto.account_create_principals = system.Everyone
kinto.account_write_principals = account:user
kinto.bucket_create_principals = account:user
kinto.record_read_principals = system.Everyone system.Authenticated
kinto.attachment.base_path = /tmp
kinto.attachment.base_url = https://cdn/
kinto.experimental_permissions_endpoint = true
kinto.flush_endpoint_enabled = false
kinto.batch_max_requests = 30
kinto.storage_backend = kinto.core.storage.postgresql
"""


def test_kinto_settings_translate_to_kilns(tmp_path):
    ini = tmp_path / "kinto.ini"
    ini.write_text(KINTO_INI)
    tree, ignored = translate(str(ini))
    assert tree == {
        "auth": {
            "userid_hmac_secret": "b4c96a8d91846eb4692291d88fe5a97d",
            "policies": ["accounts"],
        },
        "paginate": {"by": 5},
        "flush_endpoint": {"enabled": False},
        "attachments": {"resources": ["record"], "base_path": "/tmp", "base_url": "https://cdn/"},
        "accounts": {
            "create_principals": ["system.Everyone"],
            "admin_principals": ["account:user"],
        },
        "bucket": {"create_principals": ["account:user"]},
        "record": {"read_principals": ["system.Everyone", "system.Authenticated"]},
        "permissions_endpoint": {"enabled": True},
        "batch": {"max_requests": 30},
    }
    assert ignored == ["kinto.includes: kinto_signer", "kinto.storage_backend"]
    run = subprocess.run(
        [sys.executable, str(EXAMPLE / "kinto_ini.py"), str(ini)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(run.stdout) == tree
    assert "left out: kinto.storage_backend" in run.stderr
