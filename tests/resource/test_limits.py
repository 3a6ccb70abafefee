"""Request limits hold on what a request makes, not only on what it sends (issue #15).

Real requests over loopback to a served app (werkzeug's threaded server), on
the fast path and on the Flask path.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

import kiln
from kiln._json import MAX_JSON_DEPTH
from tests.resource.live_server import Client, serve_in_thread, serve_with_gunicorn

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
MAX_BODY = 64 * 1024
SECRET = "limits-secret-" + "l" * 40


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def build_app(backend: str, tmp_path, *, flask_path: bool = False):
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": {"backend": backend, "url": str(tmp_path / "limits.sqlite")},
            "request": {"max_body_bytes": MAX_BODY},
            "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
            "toadstool": {"create_principals": ["system.Authenticated"]},
        },
        configure_logging=False,
    )
    if flask_path:
        # A hook of the app's own sends resource requests through Flask.
        app.before_request(lambda: None)
    return app


@contextlib.contextmanager
def served(backend: str, tmp_path, *, flask_path: bool = False) -> Iterator[Client]:
    app = build_app(backend, tmp_path, flask_path=flask_path)
    with serve_in_thread(app) as url:
        client = Client(url + "/v1")
        try:
            yield client
        finally:
            client.close()
            app.extensions["kiln"].close()


@pytest.fixture(params=["memory-fast", "sqlite-flask"])
def client(request, tmp_path):
    backend, path = request.param.split("-")
    with served(backend, tmp_path, flask_path=path == "flask") as client:
        yield client


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def assert_refused(reply, status: int, errno: int) -> None:
    assert reply.status == status, reply.body
    assert reply.body["code"] == status
    assert reply.body["errno"] == errno


# -- item 4: the record after PATCH --------------------------------------------------


def test_json_patch_copies_nesting_a_record_past_the_depth_limit_answer_400(client):
    # A record 95 levels deep (the body, with its envelope, is within the limit).
    data = {"a": nested(MAX_JSON_DEPTH - 5), "b": {}}
    created = client.request("POST", "/memos", {"data": data})
    assert created.status == 201, created.body
    path = f"/memos/{created.body['data']['id']}"
    ops = [
        {"op": "copy", "from": "/data/a", "path": "/data/b/x"},
        {"op": "copy", "from": "/data/b", "path": "/data/a" + "/n" * (MAX_JSON_DEPTH - 6) + "/y"},
    ]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert_refused(reply, 400, 107)
    assert "nesting" in reply.body["message"]
    assert client.get(path).body["data"] == {**data, **_meta(created)}


def test_json_patch_copies_that_cross_orjsons_recursion_limit_answer_400(client):
    created = client.request("POST", "/memos", {"data": {"a": nested(90), "b": {}}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "copy", "from": "/data/a", "path": "/data/a" + "/n" * 88 + "/x"}]
    ops += [{"op": "copy", "from": "/data/a", "path": "/data/a" + "/n" * 88 + "/z"}]
    ops += [{"op": "copy", "from": "/data/a", "path": "/data/a" + "/n" * 88 + "/w"}]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert_refused(reply, 400, 107)


def test_json_patch_copies_growing_a_record_past_the_body_limit_answer_413(client):
    created = client.request("POST", "/memos", {"data": {"a": "x" * 100}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "copy", "from": "/data/a", "path": "/data/b"}]
    ops += [{"op": "copy", "from": "/data", "path": f"/data/c{i}"} for i in range(40)]
    body = orjson.dumps(ops)
    assert len(body) < 4096
    reply = client.request("PATCH", path, raw=body, headers=_type(JSON_PATCH))
    assert_refused(reply, 413, 113)
    assert "request.max_body_bytes" in reply.body["message"]
    assert client.get(path).body["data"]["a"] == "x" * 100
    assert "b" not in client.get(path).body["data"]


def test_json_patch_copies_that_stay_under_the_limits_apply(client):
    created = client.request("POST", "/memos", {"data": {"a": "x" * 100}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "copy", "from": "/data", "path": f"/data/c{i}"} for i in range(5)]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert reply.status == 200, reply.body
    assert len(orjson.dumps(reply.body["data"])) > 3000


def test_json_patch_copy_and_remove_near_the_limit_apply(client):
    created = client.request("POST", "/memos", {"data": {"a": "x" * (MAX_BODY // 2 - 100)}})
    path = f"/memos/{created.body['data']['id']}"
    ops = []
    for _ in range(3):
        ops += [
            {"op": "copy", "from": "/data/a", "path": "/data/b"},
            {"op": "remove", "path": "/data/b"},
        ]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert reply.status == 200, reply.body


def test_a_json_patch_copy_from_nowhere_answers_400(client):
    created = client.request("POST", "/memos", {"data": {"a": 1}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "copy", "from": "/data/nope", "path": "/data/b"}]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert_refused(reply, 400, 107)


def test_json_patch_add_nesting_a_record_past_the_depth_limit_answers_400(client):
    created = client.request("POST", "/memos", {"data": {"a": nested(60)}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "add", "path": "/data/a" + "/n" * 58 + "/x", "value": nested(60)}]
    reply = client.request("PATCH", path, raw=orjson.dumps(ops), headers=_type(JSON_PATCH))
    assert_refused(reply, 400, 107)


@pytest.mark.parametrize("media_type", ["application/json", MERGE_PATCH])
def test_a_patch_merging_a_record_past_the_body_limit_answers_413(client, media_type):
    half = "x" * (MAX_BODY // 2 + 10)
    created = client.request("POST", "/memos", {"data": {"a": half}})
    path = f"/memos/{created.body['data']['id']}"
    reply = client.request("PATCH", path, {"data": {"b": half}}, headers=_type(media_type))
    assert_refused(reply, 413, 113)
    assert "b" not in client.get(path).body["data"]


def test_a_patch_in_a_batch_past_the_limits_is_refused_and_nothing_is_stored(client):
    created = client.request("POST", "/memos", {"data": {"a": "x" * 100}})
    path = f"/memos/{created.body['data']['id']}"
    ops = [{"op": "copy", "from": "/data", "path": f"/data/c{i}"} for i in range(40)]
    batch = {
        "requests": [
            {"method": "PATCH", "path": path, "body": ops, "headers": _type(JSON_PATCH)},
        ]
    }
    reply = client.request("POST", "/batch", batch)
    assert reply.status == 200, reply.body
    assert reply.body["responses"][0]["status"] == 413
    assert set(client.get(path).body["data"]) == {"a", "id", "last_modified"}


def test_json_patch_copies_growing_permissions_answer_413(client):
    alice = basic("alice")
    created = client.request(
        "PUT", "/toadstools/t1", {"data": {}, "permissions": {"read": ["a" * 50]}}, alice
    )
    assert created.status == 201, created.body
    ops = [{"op": "copy", "from": "/permissions/read", "path": "/permissions/read/-"}] * 40
    reply = client.request(
        "PATCH", "/toadstools/t1", raw=orjson.dumps(ops), headers={**alice, **_type(JSON_PATCH)}
    )
    assert_refused(reply, 413, 113)


def _type(media_type: str) -> dict[str, str]:
    return {"Content-Type": media_type}


def _meta(created) -> dict:
    data = created.body["data"]
    return {"id": data["id"], "last_modified": data["last_modified"]}


# -- item 5: chunked bodies --------------------------------------------------------


def send_chunked(url: str, path: str, chunks: Iterator[bytes]) -> tuple[int, dict]:
    """POST ``chunks`` with ``Transfer-Encoding: chunked`` (no ``Content-Length``)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        # The server may answer before reading the whole body.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(
                "POST",
                path,
                body=chunks,
                headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                encode_chunked=True,
            )
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def json_chunks(size: int) -> Iterator[bytes]:
    """A JSON body of about ``size`` bytes whose first bytes parse as a record
    (a body cut short at the limit would parse too), in 8 KiB chunks."""
    yield b'{"data": {"name": "chunked"}'
    filler = b" " * (8 * 1024)
    sent = 0
    while sent < size:
        yield filler
        sent += len(filler)
    yield b"}"


@pytest.mark.parametrize("flask_path", [False, True], ids=["fast", "flask"])
@pytest.mark.parametrize("size", [3 * MAX_BODY, 10 * MAX_BODY])
def test_a_chunked_body_over_the_limit_answers_413_and_nothing_is_stored(
    tmp_path, flask_path, size
):
    app = build_app("memory", tmp_path, flask_path=flask_path)
    with serve_in_thread(app) as url:
        status, body = send_chunked(url, "/v1/memos", json_chunks(size))
        assert status == 413, body
        assert body["errno"] == 113
        client = Client(url + "/v1")
        assert client.get("/memos").body["data"] == []
        client.close()


@pytest.mark.parametrize("flask_path", [False, True], ids=["fast", "flask"])
def test_a_chunked_body_within_the_limit_is_read_whole(tmp_path, flask_path):
    app = build_app("memory", tmp_path, flask_path=flask_path)
    with serve_in_thread(app) as url:
        status, body = send_chunked(url, "/v1/memos", json_chunks(MAX_BODY // 2))
        assert status == 201, body
        assert body["data"]["name"] == "chunked"


def test_a_chunked_body_over_the_limit_answers_413_under_gunicorn(tmp_path):
    settings = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": "sqlite", "url": str(tmp_path / "g.sqlite")},
        "request": {"max_body_bytes": MAX_BODY},
    }
    with serve_with_gunicorn(settings, tmp_path, workers=1, threads=2) as url:
        for size in (3 * MAX_BODY, 10 * MAX_BODY):
            status, body = send_chunked(url, "/v1/memos", json_chunks(size))
            assert status == 413, body
        status, body = send_chunked(url, "/v1/memos", json_chunks(MAX_BODY // 2))
        assert status == 201, body
        client = Client(url + "/v1")
        assert [r["name"] for r in client.get("/memos").body["data"]] == ["chunked"]
        client.close()
