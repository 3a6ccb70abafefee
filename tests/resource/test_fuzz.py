from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln
from kiln.resource.query import decode_token, token_key
from tests.resource.live_server import Client, serve_in_thread

VIEWS = "tests.resource.concurrency_resources"
PREFIX = "/v1"
JSON_PATCH = "application/json-patch+json"
#: The fuzzed apps' secret, so a test can forge tokens as the service seals them.
SECRET = {"flask": {"config": {"SECRET_KEY": "fuzz-secret"}}}
TOKEN_KEY = token_key("fuzz-secret")
#: (collection path, record id that the fixture keeps alive)
RESOURCES = ("/funguss", "/plains")
SEEDED = {"name": "seed", "size": 3, "tags": ["a", 1], "author": {"name": "Ann"}, "kind": "x"}

FUZZ = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=24
)
big_ints = st.integers(min_value=-(2**80), max_value=2**80)
scalars = (
    st.none()
    | st.booleans()
    | big_ints
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from(["name", "size", "tags", "author", "kind", "id", "last_modified", "deleted"])
    | any_text,
    json_values,
    max_size=5,
)

FIELDS = ["name", "size", "tags", "author", "author.name", "kind", "id", "last_modified"]
FIELDS += ["deleted", "a.b.c", "ünï", "", ".", "x..y", 'q"uote', "back\\slash", "$.x", "[0]"]
PREFIXES = ["", "min_", "max_", "lt_", "gt_", "not_", "in_", "exclude_", "has_", "like_"]
PREFIXES += ["contains_", "contains_any_", "eq_", "_"]
SPECIALS = ["_sort", "_limit", "_token", "_fields", "_since", "_before", "_to", "last_modified"]
VALUE_SAMPLES = [
    "",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    '[1,"a",null]',
    '{"a":1}',
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-0",
    "0x10",
    '"x"',
    "*",
    "%",
    "_",
    "\\",
    "a*b*",
    "-last_modified",
    "name,-size",
    "-",
    ",",
    ",,",
    "1,2,3",
    "9" * 40,
    "-" + "9" * 40,
    "1.5",
    str(2**63),
    str(2**64),
    "\x00",
    "\x1f\x7f",
    "\u2028",
    "😀",
]
query_names = (
    st.sampled_from(SPECIALS)
    | st.builds(lambda p, f: p + f, st.sampled_from(PREFIXES), st.sampled_from(FIELDS[:8]))
    | st.builds(lambda p, f: p + f, st.sampled_from(PREFIXES), st.sampled_from(FIELDS))
    | st.builds(lambda p, f: p + f, st.sampled_from(PREFIXES), any_text)
)
query_values = (
    st.sampled_from(VALUE_SAMPLES)
    | any_text
    | big_ints.map(str)
    | st.floats().map(repr)
    | json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
    | st.lists(st.sampled_from(VALUE_SAMPLES) | any_text, max_size=4).map(",".join)
)
query_pairs = st.lists(st.tuples(query_names, query_values), max_size=5)
raw_query_tails = st.sampled_from(
    [b"", b"&", b"=&=", b"%", b"%zz", b"%ff%fe", b"a=%c3", b";;", b"?"]
)

PRECONDITIONS = ['"0"', '"1"', "*", '"*"', 'W/"1"', '"' + "9" * 30 + '"', '"-1"', '""', '"1" ']
CONTENT_TYPES = [
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "",
]
ACCEPTS = ["*/*", "application/json", "text/html", "application/*;q=0", "application/json;q=0", ""]
BEHAVIORS = ["full", "light", "diff", "FULL", " diff ", "", "none"]


def _maybe_header(name: str, valid: list[str]) -> st.SearchStrategy[dict[str, str]]:
    # Mostly absent or valid, so that requests get past the header checks.
    value = st.sampled_from("aaaaaavvvw").flatmap(
        lambda kind: {"a": st.none(), "v": st.sampled_from(valid), "w": header_text}[kind]
    )
    return value.map(lambda v: {} if v is None else {name: v})


headers = st.builds(
    lambda *parts: {k: v for part in parts for k, v in part.items()},
    _maybe_header("If-Match", ['"0"', '"1"', *PRECONDITIONS]),
    _maybe_header("If-None-Match", PRECONDITIONS),
    _maybe_header("Content-Type", CONTENT_TYPES),
    _maybe_header("Accept", ACCEPTS),
    _maybe_header("Response-Behavior", BEHAVIORS),
)

PATCH_PATHS = ["/data/name", "/data", "/data/tags/-", "/data/tags/0", "/data/tags/9", "/data/a/b"]
PATCH_PATHS += ["/permissions/read", "/permissions", "", "/", "/data/~2", "data", "/data/id"]
patch_operations = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"])},
        optional={
            "path": st.sampled_from(PATCH_PATHS) | any_text | json_values,
            "from": st.sampled_from(PATCH_PATHS) | json_values,
            "value": json_values,
        },
    )
    | json_values,
    max_size=5,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        inner = b"[" * depth + b"1" + b"]" * depth
    else:
        inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"data":{"deep":' + inner + b"}}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


fungus_data = st.fixed_dictionaries(
    {},
    optional={
        "name": any_text,
        "size": big_ints | st.floats(allow_nan=False, allow_infinity=False),
        "tags": st.lists(scalars, max_size=3),
        "author": st.dictionaries(st.sampled_from(["name", "x"]), scalars, max_size=2),
        "kind": st.sampled_from(["x", "y"]),
        "id": st.sampled_from(["kept", "n1", "new", "bad id"]),
        "last_modified": big_ints,
    },
)
bodies = st.one_of(
    st.none(),
    st.builds(lambda data: _dumps({"data": data}), fungus_data),
    st.builds(lambda data: _dumps({"data": data}), fungus_data),
    st.builds(lambda data: _dumps({"data": data}), json_objects),
    st.builds(lambda data: _dumps({"data": data}), json_values),
    st.builds(lambda body: _dumps(body), json_values),
    st.builds(
        lambda data, extra: _dumps({"data": data, **extra}),
        json_objects,
        st.dictionaries(st.sampled_from(["permissions", "defaults", "x"]), json_values, max_size=2),
    ),
    patch_operations.map(_dumps),
    st.binary(max_size=64),
    st.builds(
        _nested,
        st.sampled_from([1, 50, 99, 100, 101, 200, 500, 900, 1000, 1100, 5000]),
        st.sampled_from(["list", "object"]),
    ),
    st.sampled_from([10_000, 500_000, 1_100_000]).map(
        lambda size: _dumps({"data": {"name": "x" * size}})
    ),
)

COLLECTION_METHODS = ["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]
RECORD_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"]
record_ids = (
    st.sampled_from(
        ["kept", "kept", "n1", "new", "missing", "a" * 300, "..", "-x", "é", "a b", "a/b"]
    )
    | any_text
)


@st.composite
def protocol_requests(draw, endpoint: str) -> dict[str, Any]:
    collection = draw(st.sampled_from(RESOURCES))
    if endpoint == "record":
        path = f"{PREFIX}{collection}/{quote(draw(record_ids), safe='')}"
        method = draw(st.sampled_from(RECORD_METHODS))
    else:
        path = PREFIX + collection
        method = draw(st.sampled_from(COLLECTION_METHODS))
    return {
        "method": method,
        "path": path,
        "pairs": draw(query_pairs),
        "tail": draw(raw_query_tails),
        "headers": draw(headers),
        "body": draw(bodies),
        "forged_last": draw(st.none() | json_values),
    }


WILD_PATHS = (
    st.sampled_from(
        [
            "/funguss",
            "/plains/kept",
            "/v1/funguss?_sort=name",
            "/batch",
            "/v1/batch",
            "//evil.example/x",
            "/funguss/\n",
            "/plains/kept/",
            "funguss",
            "/v2/funguss",
            "/__heartbeat__",
            "/",
        ]
    )
    | any_text
    | json_values
)
sub_requests = st.fixed_dictionaries(
    {
        "path": st.sampled_from("vvvw").flatmap(
            lambda kind: (
                st.sampled_from(["/funguss", "/plains", "/plains/kept", "/funguss/new"])
                if kind == "v"
                else WILD_PATHS
            )
        )
    },
    optional={
        "method": st.sampled_from(RECORD_METHODS * 3 + ["TRACE", "get", "", None]),
        "headers": st.dictionaries(
            st.sampled_from(["If-Match", "If-None-Match", "Content-Type", "Accept"]) | any_text,
            st.sampled_from(PRECONDITIONS + CONTENT_TYPES) | any_text,
            max_size=3,
        )
        | json_values,
        "body": st.builds(lambda data: {"data": data}, fungus_data | json_objects)
        | patch_operations
        | json_values,
    },
)
valid_batches = st.builds(
    lambda defaults, requests: _dumps(
        {k: v for k, v in (("defaults", defaults), ("requests", requests)) if v is not None}
    ),
    st.none() | st.just({"method": "POST"}) | st.just({"headers": {"If-None-Match": "*"}}),
    st.lists(sub_requests, min_size=1, max_size=27),
)
wild_batches = st.builds(
    lambda defaults, requests: _dumps({"defaults": defaults, "requests": requests}),
    st.none() | sub_requests | json_values,
    st.none() | st.lists(sub_requests, max_size=27) | json_values,
)
batch_bodies = st.sampled_from("vvvvwb").flatmap(
    lambda kind: {"v": valid_batches, "w": wild_batches, "b": bodies}[kind]
)

# --------------------------------------------------------------------------
# Sending and checking
# --------------------------------------------------------------------------


def assert_not_a_server_error(
    status: int, content_type: str, body: bytes, method: str, seen
) -> None:
    assert status < 500, f"{status} for {seen}: {body[:500]!r}"
    if 400 <= status < 500 and method != "HEAD":
        assert content_type.startswith("application/json"), (status, seen, body[:200])
        payload = orjson.loads(body)
        assert payload["code"] == status, (payload, seen)
        assert isinstance(payload["errno"], int), (payload, seen)
        assert isinstance(payload["error"], str), (payload, seen)
        assert "Traceback" not in body.decode("utf-8", "replace")


def _forge_token(next_page: str, last: Any) -> str | None:
    """A real ``Next-Page`` token with its ``last`` values replaced by ``last``,
    sealed again with the fuzzed apps' key (as only the service could)."""
    token = dict(parse_qsl(urlsplit(next_page).query)).get("_token")
    if token is None:
        return None
    payload = decode_token(token, TOKEN_KEY)
    payload["last"] = last
    sealed = AESSIV(TOKEN_KEY).encrypt(_dumps(payload), None)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def with_content_type(headers: dict[str, str] | None, body: bytes | None) -> dict[str, str]:
    rv = dict(headers or {})
    if body is not None and "Content-Type" not in rv:
        rv["Content-Type"] = JSON_PATCH if body.startswith(b"[") else "application/json"
    return rv


Send = Callable[..., tuple[int, dict[str, str], bytes]]


def send_drawn_request(send: Send, drawn: dict[str, Any]) -> int:
    pairs = list(drawn["pairs"])
    if drawn["forged_last"] is not None and drawn["method"] in ("GET", "HEAD"):
        sort = next((value for name, value in pairs if name == "_sort"), "name")
        status, response_headers, _ = send(
            "GET", drawn["path"].split("?")[0], urlencode([("_sort", sort), ("_limit", "1")]), {}
        )
        next_page = response_headers.get("Next-Page")
        forged = _forge_token(next_page, drawn["forged_last"]) if next_page else None
        if forged is not None:
            pairs = [(n, v) for n, v in pairs if n != "_token"] + [("_token", forged)]
    query = urlencode(pairs, quote_via=quote)
    status, response_headers, body = send(
        drawn["method"], drawn["path"], query, drawn["headers"], drawn["body"], drawn["tail"]
    )
    content_type = response_headers.get("Content-Type", "")
    assert_not_a_server_error(status, content_type, body, drawn["method"], drawn)
    return status


def check_batch_answer(status: int, response_headers: dict[str, str], body: bytes, seen) -> None:
    assert_not_a_server_error(status, response_headers.get("Content-Type", ""), body, "POST", seen)
    if status == 200:
        for sub in orjson.loads(body)["responses"]:
            assert sub["status"] < 500, (sub, seen)
            if 400 <= sub["status"] < 500 and isinstance(sub["body"], dict):
                assert {"code", "errno", "error"} <= set(sub["body"]), (sub, seen)


# --------------------------------------------------------------------------
# The Flask test client: fast, a few hundred examples per endpoint
# --------------------------------------------------------------------------


def _seed(client) -> None:
    for collection in RESOURCES:
        client.put(f"{PREFIX}{collection}/kept", json={"data": SEEDED})
        for index in range(3):
            client.put(
                f"{PREFIX}{collection}/n{index}",
                json={"data": {"name": f"n{index}", "size": index, "tags": [index]}},
            )


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def fuzz_app(request, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("fuzz") / "k.sqlite") if request.param == "sqlite" else ""
    app = kiln.create_app(
        {"views": [VIEWS], "storage": {"backend": request.param, "url": url}, **SECRET},
        configure_logging=False,
    )
    yield app
    app.extensions["kiln"].storage.close()


@pytest.fixture(scope="module")
def fuzz_send(fuzz_app) -> Send:
    client = fuzz_app.test_client()
    calls = iter(range(1, 10**9))

    def send(method, path, query="", headers=None, body=None, tail=b""):
        kwargs: dict[str, Any] = {"headers": with_content_type(headers, body)}
        if body is not None:
            kwargs["data"] = body
        raw_query = query + tail.decode("latin-1")
        if next(calls) % 20 == 0:
            _seed(client)  # the fuzz deletes records; keep some to work on
        response = client.open(path, method=method, query_string=raw_query, **kwargs)
        return response.status_code, dict(response.headers), response.get_data()

    _seed(client)
    return send


@FUZZ
@given(drawn=protocol_requests("collection"))
def test_no_bad_input_on_a_collection_gets_a_5xx(fuzz_send, drawn):
    assert send_drawn_request(fuzz_send, drawn) < 500


@FUZZ
@given(drawn=protocol_requests("record"))
def test_no_bad_input_on_a_record_gets_a_5xx(fuzz_send, drawn):
    assert send_drawn_request(fuzz_send, drawn) < 500


@FUZZ
@given(body=batch_bodies, request_headers=headers)
def test_no_bad_batch_gets_a_5xx(fuzz_send, body, request_headers):
    request_headers = {**request_headers, "Content-Type": "application/json"}
    status, response_headers, answer = fuzz_send(
        "POST", f"{PREFIX}/batch", "", request_headers, body
    )
    check_batch_answer(status, response_headers, answer, (request_headers, body))


# --------------------------------------------------------------------------
# The same over a real socket (werkzeug's threaded server, urllib3)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def socket_send(tmp_path_factory) -> Send:
    url = str(tmp_path_factory.mktemp("fuzz-socket") / "k.sqlite")
    app = kiln.create_app(
        {"views": [VIEWS], "storage": {"backend": "sqlite", "url": url}, **SECRET},
        configure_logging=False,
    )
    _seed(app.test_client())
    with serve_in_thread(app) as base:
        client = Client(base, pool_size=4)

        def send(method, path, query="", headers=None, body=None, tail=b""):
            tail_text = tail.decode("latin-1") if tail.isascii() else ""
            full = path + ("?" + query + tail_text if query or tail_text else "")
            reply = client.request(method, full, headers=with_content_type(headers, body), raw=body)
            raw = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
            return reply.status, reply.headers, raw

        yield send
        client.close()
    app.extensions["kiln"].storage.close()


@settings(FUZZ, max_examples=200)
@given(
    drawn=st.one_of(protocol_requests("collection"), protocol_requests("record")),
    batch=st.none() | batch_bodies,
)
def test_no_bad_input_over_a_real_socket_gets_a_5xx(socket_send, drawn, batch):
    if batch is None:
        assert send_drawn_request(socket_send, drawn) < 500
        return
    status, response_headers, answer = socket_send(
        "POST", f"{PREFIX}/batch", "", {"Content-Type": "application/json"}, batch
    )
    check_batch_answer(status, response_headers, answer, batch)
