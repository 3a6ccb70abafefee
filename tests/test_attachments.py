"""Record attachments (``kiln.attachments``) and record sub-routes (#14)."""

from __future__ import annotations

import base64
import io
import os

import orjson
import pytest
from flask import Response

import kiln
from kiln.attachments import AttachmentStorage, LocalFileSystem, load_attachment_storage
from kiln.config import Configuration
from kiln.exceptions import StartupError
from kiln.resource.views import RecordCall, record_subroute, reply_response

SECRET = "attachments-secret-" + "z" * 40
RECORD = "/v1/buckets/b/collections/c/records/r"


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}


def build(tmp_path, backend="memory", **tree):
    config = {
        "views": ["tests.resource.auth_resources", "kiln.attachments"],
        "storage": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "permission": {"backend": backend, "url": str(tmp_path / "k.sqlite")},
        "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
        "bucket": {"create_principals": ["system.Authenticated"]},
        "attachments": {
            "resources": ["record"],
            "base_path": str(tmp_path / "files"),
            "base_url": "https://cdn.example.com/",
            "max_bytes": 100,
        },
        **tree,
    }
    return kiln.create_app(config, configure_logging=False)


@pytest.fixture(params=["memory", "sqlite"])
def client(request, tmp_path):
    client = build(tmp_path, request.param).test_client()
    client.put("/v1/buckets/b", json={}, headers=basic("bob"))
    client.put("/v1/buckets/b/collections/c", json={}, headers=basic("bob"))
    return client


def upload(client, path=RECORD, user="bob", content=b"hello", **parts):
    form = {"attachment": (io.BytesIO(content), "Hello.TXT", "text/custom")}
    form.update({key: orjson.dumps(value).decode() for key, value in parts.items()})
    return client.post(
        f"{path}/attachment", data=form, headers=basic(user), content_type="multipart/form-data"
    )


def stored(tmp_path):
    return sorted(
        os.path.relpath(os.path.join(root, name), tmp_path / "files")
        for root, _, names in os.walk(tmp_path / "files")
        for name in names
    )


def test_an_upload_creates_the_record_with_the_files_metadata(client, tmp_path):
    answer = upload(client, data={"secret": "x"}, permissions={"read": ["system.Everyone"]})
    assert answer.status_code == 201, answer.json
    record = answer.json["data"]
    meta = record["attachment"]
    assert record["secret"] == "x"
    assert meta["filename"] == "Hello.TXT"
    assert meta["mimetype"] == "text/custom"
    assert meta["size"] == 5
    assert meta["hash"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert meta["location"].startswith("https://cdn.example.com/b/c/")
    assert meta["location"].endswith(".txt")
    assert answer.json["permissions"]["read"] == ["system.Everyone"]
    (path,) = stored(tmp_path)
    assert meta["location"] == "https://cdn.example.com/" + path
    assert (tmp_path / "files" / path).read_bytes() == b"hello"
    assert client.get(RECORD).json["data"]["attachment"] == meta


def test_an_upload_on_an_existing_record_keeps_its_fields_and_drops_the_old_file(client, tmp_path):
    client.put(RECORD, json={"data": {"kept": 1}}, headers=basic("bob"))
    first = upload(client).json["data"]["attachment"]
    answer = upload(client, content=b"again")
    assert answer.status_code == 200
    record = answer.json["data"]
    assert record["kept"] == 1
    assert record["attachment"]["location"] != first["location"]
    location = record["attachment"]["location"]
    assert stored(tmp_path) == [location.removeprefix("https://cdn.example.com/")]


def test_delete_detaches_the_file_and_removes_it(client, tmp_path):
    upload(client)
    answer = client.delete(f"{RECORD}/attachment", headers=basic("bob"))
    assert answer.status_code == 200
    assert answer.json["data"]["attachment"] is None
    assert stored(tmp_path) == []
    assert client.get(RECORD, headers=basic("bob")).json["data"]["attachment"] is None


def test_deleting_the_record_removes_its_file(client, tmp_path):
    upload(client)
    client.delete(RECORD, headers=basic("bob"))
    assert stored(tmp_path) == []


def test_the_records_permissions_apply_and_a_refused_file_is_not_kept(client, tmp_path):
    answer = upload(client, user="mallory")
    assert answer.status_code == 403
    assert stored(tmp_path) == []
    assert client.delete(f"{RECORD}/attachment", headers=basic("mallory")).status_code in (
        403,
        404,
    )
    anonymous = client.post(
        f"{RECORD}/attachment",
        data={"attachment": (io.BytesIO(b"x"), "x.txt")},
        content_type="multipart/form-data",
    )
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"data": b"{}", "content_type": "application/json"}, 400, "multipart/form-data"),
        ({"data": {}, "content_type": "multipart/form-data"}, 400, "'attachment' is required"),
        (
            {
                "data": {"attachment": (b"x", "x.txt"), "data": "{nope"},
                "content_type": "multipart/form-data",
            },
            400,
            "must be a JSON object",
        ),
        (
            {
                "data": {"attachment": (b"x", "x.txt"), "permissions": "[1]"},
                "content_type": "multipart/form-data",
            },
            400,
            "must be a JSON object",
        ),
        (
            {
                "data": {"attachment": (b"x" * 101, "x.txt")},
                "content_type": "multipart/form-data",
            },
            413,
            "at most 100 bytes",
        ),
        (
            {
                "data": {"attachment": (b"x" * 70_000, "x.txt")},
                "content_type": "multipart/form-data",
            },
            413,
            "",
        ),
        (
            {
                "data": b"--xyz\r\nContent-Disposition: form-data; name=attach",
                "content_type": "multipart/form-data; boundary=xyz",
            },
            400,
            "",
        ),
    ],
)
def test_bad_uploads_are_refused_with_a_json_error(client, tmp_path, kwargs, status, message):
    if isinstance(kwargs["data"], dict) and "attachment" in kwargs["data"]:
        content, filename = kwargs["data"]["attachment"]
        kwargs = {
            **kwargs,
            "data": {**kwargs["data"], "attachment": (io.BytesIO(content), filename)},
        }
    answer = client.post(f"{RECORD}/attachment", headers=basic("bob"), **kwargs)
    assert answer.status_code == status
    assert answer.is_json
    assert message in answer.json["message"]
    assert stored(tmp_path) == []


def test_unsafe_parent_ids_and_extensions_make_a_safe_location(tmp_path):
    storage = LocalFileSystem(Configuration.from_mapping({"attachments": {"base_path": "x"}}))
    assert storage.locate("../etc/passwd") is None
    assert storage.locate("b/c/" + "0" * 32 + ".txt") == "b/c/" + "0" * 32 + ".txt"
    assert (
        LocalFileSystem(
            Configuration.from_mapping({"attachments": {"base_url": "https://x/"}})
        ).locate("https://y/" + "0" * 32)
        is None
    )
    storage.delete("b/c/" + "0" * 32)  # gone already: no error


def test_a_file_named_oddly_gets_no_extension(client, tmp_path):
    answer = client.post(
        f"{RECORD}/attachment",
        data={"attachment": (io.BytesIO(b"x"), "weird.ex t")},
        headers=basic("bob"),
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201
    assert "." not in answer.json["data"]["attachment"]["location"].rsplit("/", 1)[-1]


def test_old_files_may_be_kept(tmp_path):
    client = build(
        tmp_path,
        attachments={
            "resources": ["record"],
            "base_path": str(tmp_path / "files"),
            "keep_old_files": True,
        },
    ).test_client()
    client.put("/v1/buckets/b", json={}, headers=basic("bob"))
    client.put("/v1/buckets/b/collections/c", json={}, headers=basic("bob"))
    upload(client)
    upload(client)
    assert len(stored(tmp_path)) == 2
    assert upload(client).json["data"]["attachment"]["location"].startswith("b/c/")


class Elsewhere(AttachmentStorage):
    saved: dict[str, bytes] = {}

    def save(self, location, content, mimetype):
        self.saved[location] = content

    def delete(self, location):
        self.saved.pop(location, None)

    def url(self, location):
        return "s3://bucket/" + location

    def locate(self, url):
        return url.removeprefix("s3://bucket/")


def test_another_attachment_storage_can_be_named(tmp_path):
    client = build(
        tmp_path,
        attachments={"resources": ["record"], "backend": "tests.test_attachments.Elsewhere"},
    ).test_client()
    client.put("/v1/buckets/b", json={}, headers=basic("bob"))
    client.put("/v1/buckets/b/collections/c", json={}, headers=basic("bob"))
    meta = upload(client).json["data"]["attachment"]
    assert meta["location"].startswith("s3://bucket/b/c/")
    assert list(Elsewhere.saved.values()) == [b"hello"]
    client.delete(f"{RECORD}/attachment", headers=basic("bob"))
    assert Elsewhere.saved == {}


@pytest.mark.parametrize("name", ["nowhere.Missing", "tests.test_attachments.basic", "plain"])
def test_a_wrong_attachment_storage_fails_at_startup(name):
    with pytest.raises(StartupError, match="AttachmentStorage subclass"):
        load_attachment_storage(Configuration.from_mapping({"attachments": {"backend": name}}))


def test_without_resources_nothing_is_mounted(tmp_path):
    app = build(tmp_path, attachments={"resources": []})
    assert not any(rule.rule.endswith("/attachment") for rule in app.url_map.iter_rules())
    assert "attachments" not in app.test_client().get("/v1/").json["capabilities"]


def test_the_hello_view_announces_attachments(client):
    capability = client.get("/v1/").json["capabilities"]["attachments"]
    assert capability["resources"] == ["record"]
    assert capability["max_bytes"] == 100


# -- record sub-routes, on their own ------------------------------------------


def touch(call: RecordCall) -> Response:
    """Increment the record's ``count``, through the record's own checks."""
    current = call.serve("GET").body["data"].get("count", 0)
    return reply_response(call.serve("PATCH", {"data": {"count": current + 1}}))


def init_app(app):
    record_subroute(app, "toadstool", "touch", touch)


def test_a_sub_route_goes_through_the_records_permission_checks(tmp_path):
    client = build(
        tmp_path,
        views=["tests.resource.auth_resources", "tests.test_attachments"],
        toadstool={"create_principals": ["system.Authenticated"]},
    ).test_client()
    client.put("/v1/toadstools/t", json={"data": {}}, headers=basic("bob"))
    answer = client.post("/v1/toadstools/t/touch", headers=basic("bob"))
    assert (answer.status_code, answer.json["data"]["count"]) == (200, 1)
    assert answer.headers["ETag"]
    assert client.post("/v1/toadstools/t/touch", headers=basic("mallory")).status_code == 403
    assert client.post("/v1/toadstools/nope/touch", headers=basic("bob")).status_code in (
        403,
        404,
    )
    assert client.get("/v1/toadstools/t/touch", headers=basic("bob")).status_code == 405


def test_a_sub_route_on_an_unknown_resource_fails_at_startup(tmp_path):
    def declare(app):
        record_subroute(app, "nothing", "x", touch)

    import tests.test_attachments as module

    original = module.init_app
    module.init_app = declare
    try:
        with pytest.raises(StartupError, match="'nothing', which is not a mounted resource"):
            build(tmp_path, views=["tests.resource.auth_resources", "tests.test_attachments"])
    finally:
        module.init_app = original


def test_a_location_that_is_not_ours_is_left_alone(client, tmp_path):
    foreign = {"location": "https://elsewhere.example.com/x.txt"}
    client.put(RECORD, json={"data": {"attachment": foreign}}, headers=basic("bob"))
    upload(client, path="/v1/buckets/b/collections/c/records/other")
    answer = client.delete(f"{RECORD}/attachment", headers=basic("bob"))
    assert answer.status_code == 200
    assert len(stored(tmp_path)) == 1
