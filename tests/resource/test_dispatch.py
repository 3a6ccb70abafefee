from __future__ import annotations

import base64
import io
import re

import orjson
import pytest
from werkzeug.datastructures import EnvironHeaders

import kiln
from kiln._state import state_of
from kiln.errors import HTTPError
from kiln.resource import views
from kiln.resource.dispatch import RequestHeaders, foreign_hooks, read_body

SECRET = "dispatch-secret-" + "x" * 32
VIEWS = ["tests.resource.auth_resources"]


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()


ALICE = {"Authorization": basic("alice")}
BOB = {"Authorization": basic("bob")}
ORIGIN = {"Origin": "https://app.example"}
PATCH_JSON = {"Content-Type": "application/json-patch+json"}

#: Requests sent in order to both apps: (method, path, headers, body).
SCENARIO = [
    ("GET", "/v1/toadstools", {}, None),
    ("PUT", "/v1/toadstools/t1", ALICE, {"data": {"name": "a"}}),
    (
        "PUT",
        "/v1/toadstools/t2",
        BOB,
        {"data": {"name": "b"}, "permissions": {"read": ["system.Everyone"]}},
    ),
    ("GET", "/v1/toadstools", ALICE, None),
    ("GET", "/v1/toadstools?_sort=-name&_limit=1", {**ALICE, **ORIGIN}, None),
    ("HEAD", "/v1/toadstools", ALICE, None),
    ("GET", "/v1/toadstools/t1", ALICE, None),
    ("GET", "/v1/toadstools/t1", BOB, None),
    ("GET", "/v1/toadstools/t1", {}, None),
    ("GET", "/v1/toadstools/t2", {}, None),
    ("GET", "/v1/toadstools/t1", {**ALICE, "If-None-Match": '"1"'}, None),
    ("GET", "/v1/toadstools/t1", {**ALICE, "If-None-Match": "*"}, None),
    ("GET", "/v1/toadstools/t1", {**ALICE, "Accept": "text/html"}, None),
    ("PATCH", "/v1/toadstools/t1", ALICE, {"data": {"name": "c"}}),
    ("PATCH", "/v1/toadstools/t1", {**ALICE, "If-Match": '"1"'}, {"data": {"name": "d"}}),
    (
        "PATCH",
        "/v1/toadstools/t1",
        {**ALICE, **PATCH_JSON},
        [{"op": "add", "path": "/permissions/read", "value": ["bob"]}],
    ),
    (
        "PATCH",
        "/v1/toadstools/t1",
        {**ALICE, "Response-Behavior": "light"},
        {"data": {"name": "e"}},
    ),
    ("PATCH", "/v1/toadstools/t1", {**ALICE, "Content-Type": "text/plain"}, b"x"),
    ("POST", "/v1/toadstools", ALICE, b"{not json"),
    ("POST", "/v1/toadstools", ALICE, {"data": {"name": 3}}),
    ("POST", "/v1/toadstools", ALICE, {"data": {"id": "t3", "name": "f"}}),
    ("POST", "/v1/toadstools", ALICE, {"data": {"id": "t3", "name": "f"}}),
    ("DELETE", "/v1/toadstools/t3", ALICE, None),
    ("DELETE", "/v1/toadstools/t3", ALICE, None),
    ("GET", "/v1/toadstools?_since=0&_sort=last_modified", ALICE, None),
    ("GET", "/v1/toadstools?bad_filter=1&_sort=nope", ALICE, None),
    ("GET", "/v1/diaries", {}, None),
    ("PUT", "/v1/diaries/d1", ALICE, {"data": {"name": "x"}}),
    ("GET", "/v1/diaries", ALICE, None),
    ("PUT", "/v1/buckets/b1", ALICE, {}),
    ("PUT", "/v1/buckets/b1/collections/c1", ALICE, {}),
    ("PUT", "/v1/buckets/b1/collections/c1/records/r1", ALICE, {"data": {"x": 1}}),
    ("GET", "/v1/buckets/b1/collections/c1/records", ALICE, None),
    ("GET", "/v1/buckets/nope/collections/c1/records", ALICE, None),
    ("GET", "/v1/buckets/b1/collections/c1/records", BOB, None),
    ("PUT", "/v1/memos/m1", {}, {"data": {"name": "m"}}),
    ("GET", "/v1/memos/m1", {"Authorization": "Basic !!!"}, None),
    ("DELETE", "/v1/memos", ALICE, None),
    ("PATCH", "/v1/memos/m1", {}, {"data": {"name": "n"}}),
    ("POST", "/v1/memos", {}, {"data": {"name": "amanita"}}),
    ("GET", "/v1/memos?name=amanita&_fields=name", ORIGIN, None),
    ("GET", "/v1/memos?_limit=1&_sort=name", {}, None),
    (
        "POST",
        "/v1/batch",
        ALICE,
        {
            "defaults": {"method": "PUT"},
            "requests": [
                {"path": "/toadstools/t4", "body": {"data": {"name": "g"}}},
                {"path": "/toadstools/t4", "method": "GET"},
                {"path": "/toadstools/t5", "body": {"data": {"name": 1}}},
                {"path": "/toadstools/t4", "method": "GET", "headers": BOB},
                {"path": "/memos/m2", "body": {"data": {"name": "m"}}, "headers": ORIGIN},
                {"path": "/", "method": "GET"},
            ],
        },
    ),
    ("POST", "/v1/batch", ALICE, {"requests": []}),
    ("GET", "/v1/toadstools/t4", ALICE, None),
]

TIMESTAMP = re.compile(rb"\b1\d{12}\b")
UUID = re.compile(rb"[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}")
REQUEST_ID = re.compile(rb"\b[0-9a-f]{32}\b")
TOKEN = re.compile(rb"_token=[^&\"]+")
DATE = re.compile(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")


def normalized(data: bytes) -> bytes:
    for pattern, replacement in (
        (TIMESTAMP, b"T"),
        (UUID, b"ID"),
        (REQUEST_ID, b"ID"),
        (TOKEN, b"_token=X"),
        (DATE, b"D"),
    ):
        data = pattern.sub(replacement, data)
    return data


def build(tmp_path, name: str, *, flask_path: bool, views=VIEWS, eos_date="2999-01-01"):
    app = kiln.create_app(
        {
            "views": views,
            "storage": {"backend": "sqlite", "url": str(tmp_path / f"{name}.sqlite")},
            "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
            "cors": {"origins": ["https://*.example"]},
            "eos": {"date": eos_date, "message": "Moving."},
            "backoff": 5,
            "toadstool": {"create_principals": ["system.Authenticated"]},
            "memo": {"write_principals": ["system.Everyone"], "record_patch_enabled": False},
            "diary": {},
        },
        configure_logging=False,
    )
    if flask_path:
        # A hook kiln did not install: resource requests go through Flask.
        app.before_request(lambda: None)
    return app


def send(client, method, path, headers, body):
    data = body
    if body is not None and not isinstance(body, bytes):
        data = orjson.dumps(body)
    headers = dict(headers)
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    rv = client.open(path, method=method, headers=headers, data=data)
    head = sorted((k, normalized(v.encode()).decode()) for k, v in rv.headers.items())
    return rv.status_code, head, normalized(rv.get_data())


def flask_calls(monkeypatch) -> list[int]:
    """Grows by one for each resource request that goes through Flask."""
    through_flask: list[int] = []
    original = views.flask_request
    monkeypatch.setattr(views, "flask_request", lambda v: through_flask.append(1) or original(v))
    return through_flask


def assert_same_answers(fast, slow, scenario, monkeypatch, *, fast_path=True):
    """Each request of ``scenario`` gets the same answer from both apps, and
    (``fast_path``) ``fast`` serves it without Flask."""
    through_flask = flask_calls(monkeypatch)
    fast_client, slow_client = fast.test_client(), slow.test_client()
    for method, path, headers, body in scenario:
        expected = send(slow_client, method, path, headers, body)
        flask_calls_before = len(through_flask)
        assert send(fast_client, method, path, headers, body) == expected, (method, path)
        if fast_path:
            assert len(through_flask) == flask_calls_before, (method, path)
    return through_flask


def test_the_fast_path_answers_exactly_as_flask_does(tmp_path, monkeypatch):
    fast = build(tmp_path, "fast", flask_path=False)
    slow = build(tmp_path, "slow", flask_path=True)
    assert not foreign_hooks(fast)
    assert foreign_hooks(slow)
    assert assert_same_answers(fast, slow, SCENARIO, monkeypatch)


def test_after_the_end_of_service_the_fast_path_answers_410_as_flask_does(tmp_path, monkeypatch):
    fast = build(tmp_path, "fast", flask_path=False, eos_date="2000-01-01")
    slow = build(tmp_path, "slow", flask_path=True, eos_date="2000-01-01")
    scenario = [("GET", "/v1/memos", {}, None), ("PUT", "/v1/memos/m1", ALICE, {"data": {}})]
    assert_same_answers(fast, slow, scenario, monkeypatch)
    rv = fast.test_client().get("/v1/memos")
    assert (rv.status_code, rv.get_json()["errno"]) == (410, 202)
    assert rv.headers["Alert"]


def test_routes_of_one_pattern_are_ordered_by_flask(tmp_path, monkeypatch):
    views_ = ["tests.resource.dispatch_resources"]
    fast = build(tmp_path, "fast", flask_path=False, views=views_)
    slow = build(tmp_path, "slow", flask_path=True, views=views_)
    scenario = [
        ("PUT", "/v1/shelves/s1", {}, {"data": {"name": "top"}}),
        ("GET", "/v1/shelves/s1", {}, None),
        ("POST", "/v1/shelves/s1", {}, {"data": {"id": "b1", "title": "t"}}),
        ("PUT", "/v1/shelves/s1/b1", {}, {"data": {"title": "t"}}),
        ("GET", "/v1/shelves/s1/b1", {}, None),
    ]
    through_flask = assert_same_answers(fast, slow, scenario, monkeypatch, fast_path=False)
    # The two routes of /v1/shelves/<...> are left to Flask; /v1/shelves/s1/b1 is not.
    assert len(through_flask) == 2 * 5 - 2


def test_a_clay_route_beside_a_resource_route_is_routed_by_flask(tmp_path):
    app = build(tmp_path, "clay", flask_path=False)

    @app.route("/v1/memos/special")
    def special():
        return {"special": True}

    client = app.test_client()
    assert client.get("/v1/memos/special").get_json() == {"special": True}
    client.put("/v1/memos/m1", json={"data": {"name": "m"}})
    assert client.get("/v1/memos/m1").get_json()["data"]["name"] == "m"


def test_a_path_route_that_could_take_a_resource_path_leaves_it_to_flask(tmp_path, monkeypatch):
    app = build(tmp_path, "path", flask_path=False)

    @app.route("/v1/memos/<path:rest>")
    def files(rest):
        return {"rest": rest}

    through_flask = flask_calls(monkeypatch)
    client = app.test_client()
    assert client.get("/v1/memos/a/b").get_json() == {"rest": "a/b"}
    client.put("/v1/memos/m1", json={"data": {"name": "m"}})
    assert client.get("/v1/memos/m1").get_json()["data"]["name"] == "m"
    assert len(through_flask) == 2
    client.get("/v1/memos")  # no rule beside the collection's: the fast path
    assert len(through_flask) == 2


def test_an_app_context_teardown_of_the_app_runs_for_resource_requests(tmp_path, monkeypatch):
    app = build(tmp_path, "teardown", flask_path=False)
    seen = []
    app.teardown_appcontext(seen.append)
    assert foreign_hooks(app)
    through_flask = flask_calls(monkeypatch)
    assert app.test_client().get("/v1/memos").status_code == 200
    assert seen == [None]
    assert through_flask == [1]


def test_an_error_handler_of_the_app_answers_for_resource_requests(tmp_path):
    app = build(tmp_path, "handler", flask_path=False)
    app.register_error_handler(LookupError, lambda exc: ({"mine": exc.args[0]}, 418))
    assert foreign_hooks(app)

    def authorizer(authorization):
        raise LookupError("no such grant")

    state_of(app).authorizer = authorizer
    rv = app.test_client().get("/v1/memos")
    assert (rv.status_code, rv.get_json()) == (418, {"mine": "no such grant"})


def test_an_untrusted_host_is_a_400_as_on_the_flask_path(tmp_path, monkeypatch):
    fast = build(tmp_path, "fast", flask_path=False)
    slow = build(tmp_path, "slow", flask_path=True)
    for app in (fast, slow):
        app.config["TRUSTED_HOSTS"] = ["api.example"]
    scenario = [
        ("GET", "/v1/memos", {"Host": "evil.example"}, None),
        ("GET", "/v1/memos", {"Host": "api.example"}, None),
    ]
    assert_same_answers(fast, slow, scenario, monkeypatch)
    rv = fast.test_client().get("/v1/memos", headers={"Host": "evil.example"})
    assert (rv.status_code, rv.get_json()["errno"]) == (400, 107)


def test_a_hook_of_the_app_runs_for_resource_requests(tmp_path):
    app = build(tmp_path, "hooked", flask_path=False)
    seen = []
    app.before_request(lambda: seen.append("hook"))
    app.test_client().get("/v1/memos")
    assert seen == ["hook"]


def test_a_signal_receiver_sends_resource_requests_through_flask(tmp_path):
    from flask import request_started

    app = build(tmp_path, "signal", flask_path=False)
    seen = []

    def receiver(sender, **extra):
        seen.append(sender)

    request_started.connect(receiver, app)
    try:
        app.test_client().get("/v1/memos")
    finally:
        request_started.disconnect(receiver, app)
    assert seen == [app]


def test_resource_hooks_run_with_the_app_context(tmp_path):
    from flask import current_app

    from kiln import config

    app = build(tmp_path, "context", flask_path=False)
    seen = []
    state = state_of(app)

    def authorizer(authorization):
        seen.append((current_app.name, config.get("backoff")))

    state.authorizer = authorizer
    app.test_client().get("/v1/memos")
    assert seen == [(app.name, 5)]


def chunked(data: bytes) -> dict:
    return {"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True}


def test_a_chunked_body_over_the_limit_is_refused_not_cut():
    with pytest.raises(HTTPError) as info:
        read_body(chunked(b"x" * 11), 10)
    assert info.value.status == 413
    assert read_body(chunked(b"x" * 10), 10) == b"x" * 10
    assert read_body(chunked(b"x" * 11), None) == b"x" * 11


class ShortReads(io.BytesIO):
    """A stream answering each read with at most 3 bytes, as a chunk reader may."""

    def read(self, size=-1):
        return super().read(3 if size is None or size < 0 else min(size, 3))


def test_a_chunked_body_read_in_short_reads_is_read_whole_or_refused():
    environ = {"wsgi.input": ShortReads(b"x" * 10), "wsgi.input_terminated": True}
    assert read_body(environ, 10) == b"x" * 10
    with pytest.raises(HTTPError) as info:
        read_body({"wsgi.input": ShortReads(b"x" * 11), "wsgi.input_terminated": True}, 10)
    assert info.value.status == 413


def test_a_body_is_read_by_its_announced_length():
    environ = {"wsgi.input": io.BytesIO(b"abcdef"), "CONTENT_LENGTH": "3"}
    assert read_body(environ, 10) == b"abc"
    with pytest.raises(HTTPError) as info:
        read_body({"wsgi.input": io.BytesIO(b"abc"), "CONTENT_LENGTH": "11"}, 10)
    assert info.value.status == 413


@pytest.mark.parametrize("length", ["x", "-1"])
def test_a_wrong_content_length_is_400(length):
    with pytest.raises(HTTPError) as info:
        read_body({"wsgi.input": io.BytesIO(b"abc"), "CONTENT_LENGTH": length}, 10)
    assert info.value.status == 400


def test_no_length_and_no_chunks_is_no_body():
    assert read_body({"wsgi.input": io.BytesIO(b"abc")}, 10) == b""
    assert read_body({}, 10) == b""


def test_request_headers_answer_as_werkzeug_s_environ_headers():
    environ = {
        "HTTP_AUTHORIZATION": "Basic YTpi",
        "HTTP_X_REQUEST_ID": "abc",
        "HTTP_CONTENT_TYPE": "ignored/duplicate",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "",
        "REQUEST_METHOD": "GET",
        "wsgi.input": None,
    }
    ours, theirs = RequestHeaders(environ), EnvironHeaders(environ)
    assert dict(ours.items()) == dict(theirs.items())
    assert len(ours) == len(theirs) == 3
    for name in ("authorization", "X-Request-ID", "Content-Type", "content-length", "Origin"):
        assert ours.get(name) == theirs.get(name)
        assert ours.get(name, "-") == theirs.get(name, "-")
        assert (name in ours) == (name in theirs)
    assert 3 not in ours
    assert ours["AUTHORIZATION"] == "Basic YTpi"
    with pytest.raises(KeyError):
        ours["Origin"]
