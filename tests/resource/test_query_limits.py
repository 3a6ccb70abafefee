"""Long filters and sorts are a 400 naming the parameter on every backend, not a
503 from the engine (issue #15): real requests over loopback."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
import pytest

import kiln
from kiln.exceptions import ConfigError
from kiln.storage import MAX_FILTER_VALUES, MAX_FILTERS, MAX_SORT_FIELDS
from tests.resource.live_server import Client, serve_in_thread

BACKENDS = ("memory", "sqlite", "postgresql", "redis")


@pytest.fixture(scope="module", params=BACKENDS)
def storage_settings(request, tmp_path_factory):
    backend = request.param
    if backend == "memory":
        return {"backend": "memory"}
    if backend == "sqlite":
        return {"backend": "sqlite", "url": str(tmp_path_factory.mktemp("q") / "q.sqlite")}
    if backend == "postgresql":
        return {"backend": "postgresql", "url": request.getfixturevalue("schema_url")}
    connection = request.getfixturevalue("redis_url")
    import redis

    client = redis.Redis.from_url(connection)
    client.flushdb()
    client.close()
    return {"backend": "redis", "url": connection}


@pytest.fixture(scope="module")
def api(storage_settings):
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": storage_settings,
            # The longest queries these limits allow are longer than the URL's default
            # limit (request.max_url_bytes, a 414): raised, so the query's are the ones met.
            "request": {"max_url_bytes": 1 << 20},
        },
        configure_logging=False,
    )
    with serve_in_thread(app) as url:
        client = Client(url + "/v1")
        assert client.request("PUT", "/memos/m1", {"data": {"name": "a", "n": 1}}).status < 300
        yield client
        client.close()
    app.extensions["kiln"].close()


def get(api, params) -> tuple[int, dict]:
    reply = api.get("/memos?" + urlencode(params))
    return reply.status, reply.body


def assert_refused(status, body, parameter, setting):
    assert status == 400, body
    assert body["errno"] == 107
    assert body["details"][0] == {
        "location": "querystring",
        "name": parameter,
        "description": body["details"][0]["description"],
    }
    assert setting in body["message"]


def values_text(prefix: str, values: list[str]) -> str:
    """``a,b`` for ``in_``/``exclude_``; a JSON list for ``contains_``."""
    if prefix.startswith("contains"):
        return orjson.dumps(values).decode()
    return ",".join(values)


@pytest.mark.parametrize("prefix", ["in", "exclude", "contains", "contains_any"])
def test_a_filter_of_too_many_values_is_a_400_naming_it(api, prefix):
    values = [f"v{i}" for i in range(996)]
    status, body = get(api, [(f"{prefix}_name", values_text(prefix, values))])
    assert_refused(status, body, f"{prefix}_name", "query.max_filter_values")


@pytest.mark.parametrize(
    ("prefix", "expected"), [("in", ["m1"]), ("exclude", []), ("contains_any", [])]
)
def test_a_filter_of_as_many_values_as_allowed_is_answered(api, prefix, expected):
    values = ["a", *(f"v{i}" for i in range(MAX_FILTER_VALUES - 1))]
    status, body = get(api, [(f"{prefix}_name", values_text(prefix, values))])
    assert status == 200, body
    assert [r["id"] for r in body["data"]] == expected


def test_too_many_filters_is_a_400_naming_the_first_one_too_many(api):
    params = [("not_name", f"x{i}") for i in range(996)]
    assert_refused(*get(api, params), "not_name", "query.max_filters")
    params = [("not_name", f"x{i}") for i in range(MAX_FILTERS)] + [("_since", "0")]
    assert_refused(*get(api, params), "_since", "query.max_filters")


def test_as_many_filters_as_allowed_are_answered(api):
    params = [("not_name", f"x{i}") for i in range(MAX_FILTERS - 1)] + [("_since", "0")]
    status, body = get(api, [*params, ("_limit", "5"), ("_sort", "name")])
    assert status == 200, body
    assert [r["id"] for r in body["data"]] == ["m1"]


def test_a_sort_of_too_many_fields_is_a_400_naming_it(api):
    fields = ",".join(f"f{i}" for i in range(400))
    assert_refused(*get(api, [("_sort", fields)]), "_sort", "query.max_sort_fields")


def test_a_sort_of_as_many_fields_as_allowed_is_answered(api):
    fields = ",".join(f"-f{i}" if i % 2 else f"f{i}" for i in range(MAX_SORT_FIELDS))
    status, body = get(api, [("_sort", fields), ("_limit", "1")])
    assert status == 200, body
    assert [r["id"] for r in body["data"]] == ["m1"]


def test_the_limits_are_settings():
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": {"backend": "memory"},
            "query": {"max_filters": 2, "max_filter_values": 3, "max_sort_fields": 1},
        },
        configure_logging=False,
    )
    client = app.test_client()
    assert client.get("/v1/memos?in_name=a,b,c&not_name=x").status_code == 200
    assert client.get("/v1/memos?in_name=a,b,c,d").json["details"][0]["name"] == "in_name"
    refused = client.get("/v1/memos?not_name=a&not_name=b&_before=3")
    assert refused.json["details"][0]["name"] == "_before"
    assert client.get("/v1/memos?_sort=name").status_code == 200
    assert client.get("/v1/memos?_sort=name,n").json["details"][0]["name"] == "_sort"
    # Other underscore parameters are not filters.
    assert client.get("/v1/memos?not_name=a&not_name=b&_limit=3&_other=1").status_code == 200


@pytest.mark.parametrize("key", ["max_filters", "max_filter_values", "max_sort_fields"])
def test_a_limit_must_be_positive(key):
    with pytest.raises(ConfigError, match=f"query.{key}.*greater than 0"):
        kiln.create_app({"query": {key: 0}}, configure_logging=False)
