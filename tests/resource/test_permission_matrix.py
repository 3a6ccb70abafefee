"""Every resource kind x method x caller, sent alone and inside /batch.

The table below is the declared outcome; each write case runs on a fresh app
seeded by the owner (the read cases share one), once per caller and channel:
the request alone, as a batch sub-request carrying its own credentials, and as
a sub-request inheriting the batch's credentials. All three must give exactly the declared outcome
(Kinto #2459 and #1583 were batch and plural-endpoint permission bugs).
"""

from __future__ import annotations

import base64
import itertools
from urllib.parse import urlsplit

import orjson
import pytest

import kiln
from kiln.application import close_app

VIEWS = "tests.resource.auth_resources"
SECRET = "matrix-secret-" + "x" * 32
USERS = ("anonymous", "owner", "reader", "writer", "stranger")
LOGINS = {"owner": "alice", "reader": "bob", "writer": "carol", "stranger": "dave"}
CHANNELS = ("direct", "batch", "batch-inherited")


def basic(login: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{login}-password".encode()).decode()


def headers_of(user: str) -> dict[str, str]:
    return {} if user == "anonymous" else {"Authorization": basic(LOGINS[user])}


def user_ids(client) -> dict[str, str]:
    return {
        user: client.get("/v1/", headers=headers_of(user)).json["user"]["id"] for user in LOGINS
    }


_FILES = itertools.count()


def build(backend: str, tmp_path) -> object:
    url = str(tmp_path / f"{backend}-{next(_FILES)}.sqlite")
    return kiln.create_app(
        {
            "views": [VIEWS],
            "storage": {"backend": backend, "url": url},
            "auth": {"policies": ["basicauth"], "userid_hmac_secret": SECRET},
            "toadstool": {"create_principals": ["system.Authenticated"]},
            "bucket": {"create_principals": ["system.Authenticated"]},
            "memo": {"write_principals": ["system.Authenticated"]},
        },
        configure_logging=False,
    )


def seed(client) -> None:
    ids = user_ids(client)
    owner = headers_of("owner")
    shared = {"read": [ids["reader"]], "write": [ids["writer"]]}

    def put(path, body):
        response = client.put(f"/v1{path}", json=body, headers=owner)
        assert response.status_code == 201, (path, response.json)

    put("/toadstools/t1", {"data": {"name": "one"}, "permissions": shared})
    put("/toadstools/t2", {"data": {"name": "two"}})
    put("/toadstools/t3", {"data": {"name": "three"}, "permissions": shared})
    assert client.delete("/v1/toadstools/t3", headers=owner).status_code == 200
    put("/diaries/d1", {"data": {"name": "mine"}})
    put("/memos/m1", {"data": {"name": "memo"}})
    put("/buckets/b1", {"permissions": shared})
    put("/buckets/b1/collections/c1", {})
    put("/buckets/b1/collections/c1/records/r0", {"data": {"name": "gone"}})
    put("/buckets/b1/collections/c1/records/r1", {"data": {"name": "rec"}})
    assert (
        client.delete("/v1/buckets/b1/collections/c1/records/r0", headers=owner).status_code == 200
    )
    put("/buckets/b2", {})
    put("/buckets/b2/collections/c2", {})


def each(anonymous, owner, reader, writer, stranger):
    return dict(zip(USERS, (anonymous, owner, reader, writer, stranger), strict=True))


def lists(anonymous, owner, reader, writer, stranger):
    """Expected outcomes of a list: a status, or (200, ids in order)."""
    return each(anonymous, owner, reader, writer, stranger)


T = "/toadstools"
N = "/buckets/b1/collections/c1/records"
NAME = {"data": {"name": "new"}}
#: (case id, method, path, body, {user: status | (200, [ids])})
CASES = [
    (
        "list shareable",
        "GET",
        f"{T}?_sort=name",
        None,
        lists(401, (200, ["t1", "t2"]), (200, ["t1"]), (200, ["t1"]), (200, [])),
    ),
    (
        "filter shareable",
        "GET",
        f"{T}?name=two",
        None,
        lists(401, (200, ["t2"]), (200, []), (200, []), (200, [])),
    ),
    (
        "sort and fields shareable",
        "GET",
        f"{T}?_sort=-name&_fields=name",
        None,
        lists(401, (200, ["t2", "t1"]), (200, ["t1"]), (200, ["t1"]), (200, [])),
    ),
    (
        "since with tombstones shareable",
        "GET",
        f"{T}?_since=0&_sort=id",
        None,
        lists(401, (200, ["t1", "t2"]), (200, ["t1"]), (200, ["t1"]), (200, [])),
    ),
    ("head shareable", "HEAD", T, None, each(401, 200, 200, 200, 200)),
    ("create shareable", "POST", T, NAME, each(401, 201, 201, 201, 201)),
    ("post an existing id", "POST", T, {"data": {"id": "t1"}}, each(401, 200, 200, 200, 403)),
    ("post an unreadable id", "POST", T, {"data": {"id": "t2"}}, each(401, 200, 403, 403, 403)),
    (
        "delete all shareable",
        "DELETE",
        T,
        None,
        # Those who may create here delete the (empty) part they may write, as Kinto.
        lists(401, (200, ["t1", "t2"]), (200, []), (200, ["t1"]), (200, [])),
    ),
    ("get shared record", "GET", f"{T}/t1", None, each(401, 200, 200, 200, 403)),
    ("get private record", "GET", f"{T}/t2", None, each(401, 200, 403, 403, 403)),
    ("head shared record", "HEAD", f"{T}/t1", None, each(401, 200, 200, 200, 403)),
    ("get missing record", "GET", f"{T}/nope", None, each(401, 403, 403, 403, 403)),
    ("get deleted record", "GET", f"{T}/t3", None, each(401, 403, 403, 403, 403)),
    ("replace shared record", "PUT", f"{T}/t1", NAME, each(401, 200, 403, 200, 403)),
    ("put a new record", "PUT", f"{T}/new", NAME, each(401, 201, 201, 201, 201)),
    ("patch shared record", "PATCH", f"{T}/t1", NAME, each(401, 200, 403, 200, 403)),
    (
        "patch permissions",
        "PATCH",
        f"{T}/t1",
        {"permissions": {"read": ["system.Everyone"]}},
        each(401, 200, 403, 200, 403),
    ),
    ("delete shared record", "DELETE", f"{T}/t1", None, each(401, 200, 403, 200, 403)),
    ("delete private record", "DELETE", f"{T}/t2", None, each(401, 200, 403, 403, 403)),
    (
        "list diaries",
        "GET",
        "/diaries",
        None,
        lists(401, (200, ["d1"]), (200, []), (200, []), (200, [])),
    ),
    ("get diary", "GET", "/diaries/d1", None, each(401, 200, 404, 404, 404)),
    ("put diary", "PUT", "/diaries/d1", NAME, each(401, 200, 201, 201, 201)),
    ("patch diary", "PATCH", "/diaries/d1", NAME, each(401, 200, 404, 404, 404)),
    ("delete diary", "DELETE", "/diaries/d1", None, each(401, 200, 404, 404, 404)),
    ("create diary", "POST", "/diaries", NAME, each(401, 201, 201, 201, 201)),
    (
        "list memos",
        "GET",
        "/memos",
        None,
        lists((200, ["m1"]), (200, ["m1"]), (200, ["m1"]), (200, ["m1"]), (200, ["m1"])),
    ),
    ("get memo", "GET", "/memos/m1", None, each(200, 200, 200, 200, 200)),
    ("create memo", "POST", "/memos", NAME, each(401, 201, 201, 201, 201)),
    ("patch memo", "PATCH", "/memos/m1", NAME, each(401, 200, 200, 200, 200)),
    ("delete memo", "DELETE", "/memos/m1", None, each(401, 200, 200, 200, 200)),
    (
        "list buckets",
        "GET",
        "/buckets?_sort=id",
        None,
        lists(401, (200, ["b1", "b2"]), (200, ["b1"]), (200, ["b1"]), (200, [])),
    ),
    (
        "list collections by inheritance",
        "GET",
        "/buckets/b1/collections",
        None,
        lists(401, (200, ["c1"]), (200, ["c1"]), (200, ["c1"]), 403),
    ),
    (
        "list nested records",
        "GET",
        f"{N}?_sort=id",
        None,
        lists(401, (200, ["r1"]), (200, ["r1"]), (200, ["r1"]), 403),
    ),
    (
        "nested since shows tombstones to readers",
        "GET",
        f"{N}?_since=0&_sort=id",
        None,
        lists(401, (200, ["r0", "r1"]), (200, ["r0", "r1"]), (200, ["r0", "r1"]), 403),
    ),
    ("get nested record", "GET", f"{N}/r1", None, each(401, 200, 200, 200, 403)),
    ("patch nested record", "PATCH", f"{N}/r1", NAME, each(401, 200, 403, 200, 403)),
    ("create nested record", "POST", N, NAME, each(401, 201, 403, 201, 403)),
    (
        "delete nested records",
        "DELETE",
        N,
        None,
        lists(401, (200, ["r1"]), 403, (200, ["r1"]), 403),
    ),
    (
        "list records of an unshared bucket",
        "GET",
        "/buckets/b2/collections/c2/records",
        None,
        lists(401, (200, []), 403, 403, 403),
    ),
    ("missing bucket", "GET", "/buckets/nope/collections", None, each(401, 403, 403, 403, 403)),
    (
        "missing collection of a readable bucket",
        "GET",
        "/buckets/b1/collections/nope/records",
        None,
        each(401, 404, 404, 404, 403),
    ),
]


def send(client, channel, user, method, path, body):
    headers = headers_of(user)
    if channel == "direct":
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["content_type"] = "application/json"
        response = client.open(f"/v1{path}", method=method, **kwargs)
        payload = response.get_json(silent=True) if method != "HEAD" else None
        return response.status_code, payload
    sub = {"method": method, "path": path}
    if body is not None:
        sub["body"] = body
    batch_headers = {}
    if channel == "batch":
        sub["headers"] = headers
    else:
        batch_headers = headers
    response = client.post("/v1/batch", json={"requests": [sub]}, headers=batch_headers)
    assert response.status_code == 200, response.json
    (answer,) = response.json["responses"]
    return answer["status"], answer["body"] if method != "HEAD" else None


def outcome(status, payload, expected, ordered=True):
    if isinstance(expected, tuple) and status == 200:
        ids = [record["id"] for record in payload["data"]]
        return status, ids if ordered else sorted(ids)
    return status


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_caller_gets_the_declared_outcome_alone_and_in_batch(
    backend, tmp_path, method, path, body, expected
):
    # A write runs on a fresh seeded app each time. A read changes nothing: one
    # seeded app answers every caller on every channel (so no caller's answer
    # can come from what another one read, either).
    fresh_each_time = method not in ("GET", "HEAD")
    app = None
    for user in USERS:
        for channel in CHANNELS:
            if app is None:
                app = build(backend, tmp_path)
                client = app.test_client()
                seed(client)
            status, payload = send(client, channel, user, method, path, body)
            if fresh_each_time:
                close_app(app)
                app = None
            want = expected[user]
            # A collection DELETE answers its tombstones in deletion order.
            got = outcome(status, payload, want, ordered=method != "DELETE")
            assert got == want, (user, channel, payload)
            if status in (401, 403):
                assert payload is None or payload["errno"] == (104 if status == 401 else 121)
    if app is not None:
        close_app(app)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_next_page_token_replayed_by_another_caller_shows_only_what_they_may_read(
    backend, tmp_path
):
    client = build(backend, tmp_path).test_client()
    seed(client)
    first = client.get("/v1/toadstools?_sort=name&_limit=1", headers=headers_of("owner"))
    assert [r["id"] for r in first.json["data"]] == ["t1"]
    next_page = urlsplit(first.headers["Next-Page"])
    target = f"{next_page.path.removeprefix('/v1')}?{next_page.query}"
    expected = each(401, (200, ["t2"]), (200, []), (200, []), (200, []))
    for user in USERS:
        for channel in CHANNELS:
            status, payload = send(client, channel, user, "GET", target, None)
            assert outcome(status, payload, expected[user]) == expected[user], (user, channel)
