"""``Next-Page`` carries no field value and no untrusted ``Host`` (issue #15):
real requests over loopback, on the fast path and the Flask path."""

from __future__ import annotations

import base64
import contextlib
import http.client
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

import kiln
from tests.resource.live_server import serve_in_thread

VALUE = "private-value-of-a-field"


@contextlib.contextmanager
def served(tmp_path, *, flask_path: bool = False, **settings) -> Iterator[tuple[str, int]]:
    tmp_path.mkdir(exist_ok=True)
    tree = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": "sqlite", "url": str(tmp_path / "pages.sqlite")},
        **settings,
    }
    app = kiln.create_app(tree, configure_logging=False)
    if flask_path:
        app.before_request(lambda: None)
    client = app.test_client()
    host = settings.get("trusted_hosts", ["localhost"])[0]
    for n in range(3):
        data = {"data": {"name": f"{VALUE}-{n}"}}
        created = client.put(f"/v1/memos/m{n}", json=data, base_url=f"http://{host}")
        assert created.status_code == 201, created.json
    with serve_in_thread(app) as url:
        parts = urlsplit(url)
        yield parts.hostname, parts.port
    app.extensions["kiln"].close()


def get(address: tuple[str, int], path: str, host: str | None = None, **headers):
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        if host is not None:
            headers["Host"] = host
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), orjson.loads(response.read())
    finally:
        connection.close()


def token_of(next_page: str) -> str:
    return dict(parse_qsl(urlsplit(next_page).query))["_token"]


@pytest.fixture(params=["fast", "flask"])
def flask_path(request):
    return request.param == "flask"


def test_a_token_shows_no_field_value(tmp_path, flask_path):
    with served(tmp_path, flask_path=flask_path) as address:
        status, headers, _ = get(address, "/v1/memos?_sort=name&_limit=1")
        assert status == 200
        token = token_of(headers["Next-Page"])
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert VALUE.encode() not in raw
        assert b"name" not in raw
        assert VALUE not in headers["Next-Page"]
        # And it still leads to the next page.
        status, headers, body = get(
            address,
            urlsplit(headers["Next-Page"]).path + "?" + urlsplit(headers["Next-Page"]).query,
        )
        assert status == 200
        assert [r["name"] for r in body["data"]] == [f"{VALUE}-1"]


def test_an_untrusted_host_never_ends_up_in_next_page(tmp_path, flask_path):
    with served(tmp_path, flask_path=flask_path) as address:
        status, headers, _ = get(address, "/v1/memos?_limit=1", host="evil.example")
        assert status == 200
        assert "evil.example" not in headers["Next-Page"]
        assert headers["Next-Page"].startswith("/v1/memos?")


def test_trusted_hosts_refuse_another_host_and_vouch_for_theirs(tmp_path, flask_path):
    with served(tmp_path, flask_path=flask_path, trusted_hosts=["api.example"]) as address:
        status, _, body = get(address, "/v1/memos?_limit=1", host="evil.example")
        assert status == 400, body
        assert body["message"] == "Host 'evil.example' is not trusted."  # werkzeug's words
        status, _, body = get(address, "/v1/", host="evil.example")
        assert status == 400, body
        status, headers, _ = get(address, "/v1/memos?_limit=1", host="api.example")
        assert status == 200
        assert headers["Next-Page"].startswith("http://api.example/v1/memos?")


def test_the_public_url_settings_win_over_any_host(tmp_path, flask_path):
    settings = {"http_host": "public.example:8443", "http_scheme": "https"}
    with served(tmp_path, flask_path=flask_path, **settings) as address:
        status, headers, _ = get(address, "/v1/memos?_limit=1", host="evil.example")
        assert status == 200
        assert headers["Next-Page"].startswith("https://public.example:8443/v1/memos?")


def test_forwarded_headers_are_trusted_through_proxy_fix_only(tmp_path):
    settings = {
        "trusted_hosts": ["api.example"],
        "middleware": {"werkzeug.middleware.proxy_fix.ProxyFix": {"x_host": 1, "x_proto": 1}},
    }
    with served(tmp_path, **settings) as address:
        forwarded = {"X-Forwarded-Host": "api.example", "X-Forwarded-Proto": "https"}
        status, headers, _ = get(address, "/v1/memos?_limit=1", host="internal", **forwarded)
        assert status == 200
        assert headers["Next-Page"].startswith("https://api.example/v1/memos?")
        forwarded["X-Forwarded-Host"] = "evil.example"
        assert get(address, "/v1/memos?_limit=1", **forwarded)[0] == 400


def test_tokens_of_an_older_version_or_another_secret_answer_a_clear_400(tmp_path, flask_path):
    old = {"v": 1, "last": {"id": "m0", "last_modified": 1}, "ctx": "x"}
    old_token = base64.urlsafe_b64encode(orjson.dumps(old)).decode().rstrip("=")
    with served(
        tmp_path / "a", flask_path=flask_path, flask={"config": {"SECRET_KEY": "one"}}
    ) as a:
        _, headers, _ = get(a, "/v1/memos?_limit=1")
        other_token = token_of(headers["Next-Page"])
    with served(
        tmp_path / "b", flask_path=flask_path, flask={"config": {"SECRET_KEY": "two"}}
    ) as b:
        for token in (old_token, other_token):
            status, _, body = get(b, f"/v1/memos?_limit=1&_token={token}")
            assert status == 400, body
            assert body["details"][0]["name"] == "_token"
            assert "start again without it" in body["message"]


@pytest.mark.parametrize(
    "secrets",
    [
        {"flask": {"config": {"SECRET_KEY": "shared"}}},
        {"auth": {"userid_hmac_secret": "s" * 40}},
        {},
    ],
    ids=["secret-key", "hmac-secret", "storage-url"],
)
def test_every_process_of_a_deployment_reads_the_tokens_of_the_others(tmp_path, secrets):
    tree = {
        "views": ["tests.resource.auth_resources"],
        "storage": {"backend": "sqlite", "url": str(tmp_path / "shared.sqlite")},
        **secrets,
    }
    one = kiln.create_app(tree, configure_logging=False)
    two = kiln.create_app(tree, configure_logging=False)
    for n in range(2):
        one.test_client().put(f"/v1/memos/m{n}", json={"data": {"name": str(n)}})
    next_page = one.test_client().get("/v1/memos?_limit=1").headers["Next-Page"]
    assert two.test_client().get(next_page).status_code == 200
    for app in (one, two):
        app.extensions["kiln"].close()


def test_flasks_own_trusted_hosts_vouch_for_a_host_too(tmp_path, flask_path):
    app = kiln.create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": {"backend": "memory"},
            "flask": {"config": {"TRUSTED_HOSTS": ["api.example"]}},
        },
        configure_logging=False,
    )
    if flask_path:
        app.before_request(lambda: None)
    client = app.test_client()
    for n in range(2):
        client.put(f"/v1/memos/m{n}", json={"data": {}}, base_url="http://api.example")
    with serve_in_thread(app) as url:
        address = (urlsplit(url).hostname, urlsplit(url).port)
        status, headers, _ = get(address, "/v1/memos?_limit=1", host="api.example")
        assert status == 200
        assert headers["Next-Page"].startswith("http://api.example/v1/memos?")
        status, _, body = get(address, "/v1/", host="api.example")
        assert body["url"] == "http://api.example/v1/"
        assert get(address, "/v1/memos?_limit=1", host="evil.example")[0] == 400
