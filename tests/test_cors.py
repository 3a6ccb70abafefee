from __future__ import annotations

import pytest
import urllib3

from kiln import create_app
from kiln.cors import EXPOSED_HEADERS, origin_allowed
from tests.resource.live_server import serve_in_thread


def client(**tree):
    return create_app(tree, configure_logging=False).test_client()


def test_an_allowed_origin_is_echoed_with_the_exposed_headers():
    response = client().get("/v1/", headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
    assert set(exposed) == set(EXPOSED_HEADERS)
    assert {"ETag", "Next-Page", "Total-Records", "Backoff", "Alert"} <= set(exposed)
    assert "Origin" in response.headers["Vary"]


def test_requests_without_origin_get_no_cors_headers():
    response = client().get("/v1/")
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.org", True),
        ("https://deep.app.example.org", True),
        ("https://example.org", False),
        ("https://evil.org", False),
        ("http://app.example.org", False),
        ("https://APP.Example.org", True),
        ("https://evil.com/.example.org", False),
        ("https://evil.com#.example.org", False),
        ("https://evil.com?.example.org", False),
        ("https://evil.com?x=.example.org", False),
        ("https://user@app.example.org", False),
        ("https://evil.com:1.example.org", False),
        ("https://app.example.org:8443", False),
        ("https://app.example.org/", False),
        ("https://.example.org", False),
        ("null", False),
    ],
)
def test_origins_match_wildcard_patterns(origin, allowed):
    c = client(cors={"origins": ["https://*.example.org"]})
    response = c.get("/v1/", headers={"Origin": origin})
    assert ("Access-Control-Allow-Origin" in response.headers) is allowed
    assert origin_allowed(origin, ["https://*.example.org"]) is allowed


def test_errors_carry_cors_headers_too():
    response = client().get("/v1/missing", headers={"Origin": "https://a.example"})
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_a_preflight_lists_methods_requested_headers_and_max_age():
    response = client(cors={"max_age_seconds": 600}).options(
        "/v1/batch",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Max-Age"] == "600"


def test_a_preflight_without_max_age_or_requested_headers_sends_neither():
    response = client(cors={"max_age_seconds": None}).options(
        "/v1/batch",
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Max-Age" not in response.headers
    assert "Access-Control-Allow-Headers" not in response.headers


def test_a_preflight_on_an_unknown_url_has_no_allowed_methods():
    response = client().options(
        "/v1/nowhere",
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 404
    assert "Access-Control-Allow-Methods" not in response.headers


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:8080", True),
        ("http://localhost", False),
        ("http://localhost:8080/x", False),
        ("http://[::1]:8080", True),
        ("https://api.example.org", True),
        ("https://api.example.org.evil.com", False),
        ("https://api?example.org", False),
    ],
)
def test_each_pattern_matches_whole_origins_only(origin, allowed):
    patterns = ["http://localhost:*", "http://[::1]:*", "https://api.example.org"]
    assert origin_allowed(origin, patterns) is allowed


def test_a_lone_star_allows_any_origin():
    assert origin_allowed("null", ["https://a.example", "*"])
    assert origin_allowed("https://evil.com/x", ["*"])


@pytest.mark.parametrize("path", ["/v1/", "/v1/memos"])
def test_a_served_app_echoes_no_look_alike_origin(path):
    app = create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "cors": {"origins": ["https://*.trusted.example"]},
        },
        configure_logging=False,
    )
    with serve_in_thread(app) as url:
        http = urllib3.PoolManager()
        for origin in ("https://evil.com/.trusted.example", "https://evil.com#.trusted.example"):
            response = http.request("GET", url + path, headers={"Origin": origin})
            assert response.status == 200
            assert "Access-Control-Allow-Origin" not in response.headers
        good = http.request("GET", url + path, headers={"Origin": "https://a.trusted.example"})
        assert good.headers["Access-Control-Allow-Origin"] == "https://a.trusted.example"
        http.clear()
