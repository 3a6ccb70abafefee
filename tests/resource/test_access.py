from __future__ import annotations

import base64
import threading

import jsonpatch
import pytest

import kiln
from kiln import resource
from kiln.errors import HTTPError
from kiln.exceptions import ConfigError, StartupError
from kiln.permission.memory import MemoryPermission
from kiln.resource import RequestContext, UserResource
from kiln.resource.access import (
    Access,
    AccessRules,
    ancestor_uris,
    denied,
    parse_permissions,
    patch_permissions,
)
from kiln.resource.unit_of_work import UnitOfWork

SECRET = "access-secret-" + "z" * 40


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def build(tmp_path, backend="memory", **tree):
    config = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
        "toadstool": {"create_principals": ["system.Authenticated"]},
        **tree,
    }
    return kiln.create_app(config, configure_logging=False)


def user_id(client, user):
    return client.get("/v1/", headers=basic(user)).json["user"]["id"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/mushrooms", []),
        ("/buckets/b/collections", ["/buckets/b"]),
        ("/buckets/b/collections/c/records", ["/buckets/b/collections/c", "/buckets/b"]),
    ],
)
def test_ancestor_uris_are_the_records_above_a_collection_nearest_first(uri, expected):
    assert ancestor_uris(uri) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "must be an object"),
        ({"admin": []}, "'admin' is not a permission of this resource; use read, write"),
        ({"read": "system.Everyone"}, "must be a list of principals"),
        ({"read": [""]}, "must be a list of principals"),
        ({"read": [3]}, "must be a list of principals"),
        ({"read": ["p"] * 1001}, "holds at most 1000 principals"),
    ],
)
def test_malformed_permissions_are_400s_naming_the_problem(value, message):
    with pytest.raises(HTTPError) as raised:
        parse_permissions(value, {"read", "write"})
    assert raised.value.status == 400
    assert message in raised.value.message


def test_denials_are_401_when_anonymous_and_403_with_a_message_when_authenticated():
    assert denied(["system.Everyone"]).status == 401
    refused = denied(["system.Everyone", "system.Authenticated"], "Not yours.")
    assert (refused.status, refused.message) == (403, "Not yours.")


def test_without_a_permission_backend_no_record_is_accessible():
    access = Access(AccessRules("toadstool", "shareable"), None, ("u",), "/toadstools")
    assert access.accessible_ids("read") == []
    assert access.may_record("read", "x") is False


def test_patching_write_keeps_the_creator_among_the_writers():
    backend = MemoryPermission()
    access = Access(AccessRules("toadstool", "shareable"), backend, ("u",), "/toadstools")
    access.write_permissions("t", {"write": {"bob"}}, "alice", reset=False)
    assert access.record_permissions("t") == {"read": [], "write": ["alice", "bob"]}
    access.write_permissions("t", None, None, reset=False)
    assert access.record_permissions("t") == {"read": [], "write": ["alice", "bob"]}


def test_a_user_resource_never_falls_back_to_a_shared_collection():
    with pytest.raises(HTTPError) as raised:
        UserResource().get_parent_id(RequestContext(path={}))
    assert raised.value.status == 401


def test_a_resource_of_an_unknown_kind_is_refused_at_declaration():
    class Odd(resource.Resource):
        kind = "secret"

    with pytest.raises(StartupError, match="kind 'secret' is not one of"):
        resource.register()(Odd)


def test_a_permission_setting_that_is_not_a_list_fails_at_startup(tmp_path):
    with pytest.raises(ConfigError, match=r"toadstool\.read_principals"):
        build(tmp_path, toadstool={"read_principals": {"a": 1}})


def test_cliquet_style_comma_separated_principals_are_accepted(tmp_path):
    client = build(
        tmp_path, toadstool={"read_principals": "system.Everyone", "create_principals": "a, b"}
    ).test_client()
    assert client.get("/v1/toadstools").status_code == 200
    assert client.post("/v1/toadstools", json={}, headers=basic("x")).status_code == 403


def test_a_permission_setting_a_reload_breaks_grants_nothing(tmp_path):
    app = build(tmp_path, toadstool={"read_principals": ["system.Everyone"]})
    client = app.test_client()
    assert client.get("/v1/toadstools").status_code == 200
    app.extensions["kiln"].config.set("toadstool.read_principals", 42)
    assert client.get("/v1/toadstools").status_code == 401


def test_permissions_are_refused_in_bodies_of_resources_that_have_none(tmp_path):
    client = build(tmp_path).test_client()
    body = {"data": {"name": "x"}, "permissions": {"read": ["system.Everyone"]}}
    response = client.post("/v1/memos", json=body)
    assert response.status_code == 400
    assert response.json["details"][0]["name"] == "permissions"


def test_patch_with_only_permissions_changes_them_and_not_the_record(tmp_path):
    client = build(tmp_path).test_client()
    created = client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    patched = client.patch(
        "/v1/toadstools/t1",
        json={"permissions": {"read": ["system.Everyone"]}},
        headers=basic("a"),
    )
    assert patched.status_code == 200
    assert patched.json["data"] == created.json["data"]
    assert patched.json["permissions"]["read"] == ["system.Everyone"]
    assert client.get("/v1/toadstools/t1").status_code == 200
    assert client.patch("/v1/toadstools/t1", json={}, headers=basic("a")).status_code == 400


def test_json_patch_edits_permissions_and_data_together(tmp_path):
    client = build(tmp_path).test_client()
    client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    bob = user_id(client, "bob")
    operations = [
        {"op": "add", "path": "/permissions/read/-", "value": bob},
        {"op": "replace", "path": "/data/name", "value": "y"},
    ]
    response = client.patch(
        "/v1/toadstools/t1",
        json=operations,
        headers={**basic("a"), "Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.json
    assert response.json["data"]["name"] == "y"
    assert response.json["permissions"]["read"] == [bob]
    assert client.get("/v1/toadstools/t1", headers=basic("bob")).status_code == 200


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([{"op": "move", "from": "/data/name", "path": "/permissions/read/0"}], "cannot move"),
        ([{"op": "remove", "path": "/permissions/nope"}], "does not apply"),
        ([{"op": "add", "path": "/permissions/admin", "value": []}], "not a permission"),
    ],
)
def test_wrong_json_patches_of_permissions_are_400s(tmp_path, operations, message):
    client = build(tmp_path).test_client()
    client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    response = client.patch(
        "/v1/toadstools/t1",
        json=operations,
        headers={**basic("a"), "Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400
    assert message in response.json["message"]


def test_a_child_create_permission_on_a_parent_lets_its_holder_create_below(tmp_path):
    client = build(tmp_path, bucket={"create_principals": ["system.Authenticated"]}).test_client()
    dave = user_id(client, "dave")
    client.put("/v1/buckets/b1", json={}, headers=basic("a"))
    nested = "/v1/buckets/b1/collections"
    assert client.post(nested, json={}, headers=basic("dave")).status_code == 403
    granted = client.patch(
        "/v1/buckets/b1", json={"permissions": {"collection:create": [dave]}}, headers=basic("a")
    )
    assert granted.json["permissions"]["collection:create"] == [dave]
    created = client.post(nested, json={}, headers=basic("dave"))
    assert created.status_code == 201
    assert dave in created.json["permissions"]["write"]
    assert client.get(nested, headers=basic("dave")).json["data"] == [created.json["data"]]


def test_a_batch_sees_a_permission_an_earlier_sub_request_granted(tmp_path):
    client = build(tmp_path, bucket={"create_principals": ["system.Authenticated"]}).test_client()
    dave = user_id(client, "dave")
    client.put("/v1/buckets/b1", json={}, headers=basic("a"))
    create = {
        "method": "POST",
        "path": "/buckets/b1/collections",
        "body": {},
        "headers": basic("dave"),
    }
    grant = {
        "method": "PATCH",
        "path": "/buckets/b1",
        "body": {"permissions": {"collection:create": [dave]}},
        "headers": basic("a"),
    }
    response = client.post("/v1/batch", json={"requests": [create, grant, create]})
    assert [r["status"] for r in response.json["responses"]] == [403, 200, 201]


def test_a_put_that_loses_a_create_race_needs_write_and_rolls_back_without_it(tmp_path):
    # The record appears between the permission check and the write.
    app = build(
        tmp_path,
        backend="sqlite",
        views=["tests.resource.auth_resources", "tests.resource.test_access"],
        race={"create_principals": ["system.Authenticated"]},
    )
    client = app.test_client()
    reached, release = threading.Event(), threading.Event()
    RaceResource.hooks = (reached, release)
    results = {}

    def stranger():
        results["put"] = app.test_client().put(
            "/v1/races/r1", json={"data": {"name": "wait"}}, headers=basic("dave")
        )

    thread = threading.Thread(target=stranger)
    thread.start()
    assert reached.wait(10)
    owner = client.put("/v1/races/r1", json={"data": {"name": "mine"}}, headers=basic("a"))
    assert owner.status_code == 201
    release.set()
    thread.join(10)
    assert results["put"].status_code == 403
    kept = client.get("/v1/races/r1", headers=basic("a")).json
    assert kept["data"]["name"] == "mine"
    assert kept["permissions"]["write"] == [user_id(client, "a")]


@resource.register(name="race")
class RaceResource(resource.ShareableResource):
    id_generator = resource.Slug
    hooks: tuple[threading.Event, threading.Event] | None = None

    def process_record(self, new, old):
        if new.get("name") == "wait" and old is None and self.hooks is not None:
            reached, release = self.hooks
            reached.set()
            release.wait(10)
        return new


def test_each_question_asks_the_backend_once_per_unit_of_work():
    backend = MemoryPermission()
    backend.add_principal_to_ace("/buckets/b", "read", "u")
    asked = []
    check, read = backend.check_permission, backend.objects_permissions

    def counting_check(*args, **kwargs):
        asked.append(("check", *args[:2]))
        return check(*args, **kwargs)

    def counting_read(object_ids):
        asked.append(("read", sorted(object_ids)))
        return read(object_ids)

    backend.check_permission = counting_check
    backend.objects_permissions = counting_read
    unit = UnitOfWork(None, backend)

    def access():  # a request of the unit (a batch's sub-request)
        rules = AccessRules("collection", "shareable")
        return Access(rules, backend, ("u",), "/buckets/b/collections", unit)

    first = access()
    assert first.may_collection("read")
    assert first.may_collection("read")
    second = access()
    assert second.may_collection("read")
    assert second.may_record("read", "c")
    assert second.may_record("read", "c")
    assert access().may_record("read", "c")
    assert not access().may_record("write", "c")
    assert asked == [
        ("check", "/buckets/b", "read"),
        ("read", ["/buckets/b", "/buckets/b/collections/c"]),
    ]


def test_a_writer_who_patches_a_record_becomes_one_of_its_writers(tmp_path):
    client = build(tmp_path, toadstool={"write_principals": ["system.Authenticated"]}).test_client()
    owner, other = user_id(client, "a"), user_id(client, "b")
    client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    patched = client.patch("/v1/toadstools/t1", json={"data": {"name": "y"}}, headers=basic("b"))
    assert patched.status_code == 200
    assert patched.json["permissions"]["write"] == sorted([owner, other])
    again = client.patch("/v1/toadstools/t1", json={"data": {"name": "z"}}, headers=basic("a"))
    assert again.json["permissions"]["write"] == sorted([owner, other])
    shown = client.get("/v1/toadstools/t1", headers=basic("a")).json
    assert shown["permissions"]["write"] == sorted([owner, other])
    assert shown["data"]["name"] == "z"


def test_json_patch_of_data_only_on_a_shareable_record_keeps_its_permissions(tmp_path):
    client = build(tmp_path).test_client()
    created = client.put(
        "/v1/toadstools/t1",
        json={"data": {"name": "x"}, "permissions": {"read": ["system.Everyone"]}},
        headers=basic("a"),
    )
    response = client.patch(
        "/v1/toadstools/t1",
        json=[{"op": "replace", "path": "/data/name", "value": "y"}],
        headers={**basic("a"), "Content-Type": "application/json-patch+json"},
    )
    assert response.json["data"]["name"] == "y"
    assert response.json["permissions"] == created.json["permissions"]


def test_put_with_only_data_keeps_the_records_permissions(tmp_path):
    client = build(tmp_path, toadstool={"write_principals": ["system.Authenticated"]}).test_client()
    owner, other = user_id(client, "a"), user_id(client, "b")
    created = client.put(
        "/v1/toadstools/t1",
        json={"data": {"name": "x"}, "permissions": {"read": ["system.Everyone"]}},
        headers=basic("a"),
    )
    assert created.json["permissions"] == {"read": ["system.Everyone"], "write": [owner]}
    replaced = client.put("/v1/toadstools/t1", json={"data": {"name": "y"}}, headers=basic("b"))
    assert replaced.status_code == 200
    assert replaced.json["permissions"] == {
        "read": ["system.Everyone"],
        "write": sorted([owner, other]),
    }
    assert client.get("/v1/toadstools/t1").json["data"]["name"] == "y"


def test_put_with_permissions_replaces_them_all(tmp_path):
    client = build(tmp_path).test_client()
    owner = user_id(client, "a")
    client.put(
        "/v1/toadstools/t1",
        json={"data": {"name": "x"}, "permissions": {"read": ["system.Everyone"]}},
        headers=basic("a"),
    )
    replaced = client.put(
        "/v1/toadstools/t1",
        json={"data": {"name": "y"}, "permissions": {"write": []}},
        headers=basic("a"),
    )
    assert replaced.json["permissions"] == {"read": [], "write": [owner]}
    assert client.get("/v1/toadstools/t1").status_code == 401


def test_kintos_json_patch_form_names_the_principal_in_the_path(tmp_path):
    client = build(tmp_path).test_client()
    client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    bob = user_id(client, "bob")
    headers = {**basic("a"), "Content-Type": "application/json-patch+json"}
    added = client.patch(
        "/v1/toadstools/t1",
        json=[
            {"op": "add", "path": f"/permissions/read/{bob}"},
            {"op": "add", "path": "/permissions/read/system.Authenticated"},
        ],
        headers=headers,
    )
    assert added.status_code == 200, added.json
    assert added.json["permissions"]["read"] == sorted([bob, "system.Authenticated"])
    assert client.get("/v1/toadstools/t1", headers=basic("bob")).status_code == 200
    removed = client.patch(
        "/v1/toadstools/t1",
        json=[{"op": "remove", "path": "/permissions/read/system.Authenticated"}],
        headers=headers,
    )
    assert removed.json["permissions"]["read"] == [bob]
    absent = client.patch(
        "/v1/toadstools/t1",
        json=[{"op": "remove", "path": "/permissions/read/system.Everyone"}],
        headers=headers,
    )
    assert absent.status_code == 400
    assert "is not in permissions.read" in absent.json["message"]


def test_patch_permissions_applies_both_forms_in_order():
    current = {"read": ["alice"], "write": ["owner"]}
    operations = [
        {"op": "add", "path": "/permissions/read/-", "value": "bob"},
        {"op": "add", "path": "/permissions/read/alice", "value": "ignored"},
        {"op": "add", "path": "/permissions/write/~1buckets~1b~1groups~1g"},
        {"op": "remove", "path": "/permissions/read/0"},
        {"op": "add", "path": "/permissions/collection:create/carol"},
    ]
    assert patch_permissions(current, operations) == {
        "read": ["bob"],
        "write": ["owner", "/buckets/b/groups/g"],
        "collection:create": ["carol"],
    }
    assert current == {"read": ["alice"], "write": ["owner"]}


@pytest.mark.parametrize(
    "operations",
    [
        [
            {"op": "replace", "path": "/permissions/read", "value": "x"},
            {"op": "add", "path": "/permissions/read/a"},
        ],
        [{"op": "remove", "path": "/permissions"}, {"op": "add", "path": "/permissions/read/a"}],
        [{"op": "remove", "path": "/permissions/read/nobody"}],
        [{"op": "add", "path": "/permissions/read/", "value": "x"}],
        [{"op": "add", "path": 3, "value": "x"}],
    ],
)
def test_patch_permissions_refuses_operations_that_do_not_apply(operations):
    with pytest.raises((jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)):
        patch_permissions({"read": [], "write": []}, operations)


def test_deleting_a_collection_one_may_create_in_but_holds_nothing_of_answers_an_empty_list(
    tmp_path,
):
    client = build(tmp_path).test_client()
    client.put("/v1/toadstools/t1", json={"data": {"name": "x"}}, headers=basic("a"))
    response = client.delete("/v1/toadstools", headers=basic("b"))
    assert (response.status_code, response.json) == (200, {"data": []})
    assert client.get("/v1/toadstools/t1", headers=basic("a")).status_code == 200
    assert client.delete("/v1/toadstools").status_code == 401


def test_deleting_a_collection_one_may_not_create_in_nor_write_is_403(tmp_path):
    client = build(tmp_path, bucket={"create_principals": ["system.Authenticated"]}).test_client()
    assert client.put("/v1/buckets/b1", json={}, headers=basic("a")).status_code == 201
    collection = client.put("/v1/buckets/b1/collections/c1", json={}, headers=basic("a"))
    assert collection.status_code == 201
    assert client.delete("/v1/buckets/b1/collections", headers=basic("b")).status_code == 403
