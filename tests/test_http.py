from __future__ import annotations

import concurrent.futures
import logging
import socket
import time
from urllib.parse import quote

import flask
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln.config
from kiln import http
from kiln.exceptions import ConfigError, KilnError
from tests.http_servers import TestServer, tls_server_context


@pytest.fixture(autouse=True)
def _fresh_http(monkeypatch):
    monkeypatch.setattr(kiln.config.CONFIG, "config", {})
    yield
    with http._managers_lock:
        for manager in http._managers.values():
            manager.clear()
        http._managers.clear()


@pytest.fixture
def configure(monkeypatch):
    def set_http(**settings):
        monkeypatch.setattr(kiln.config.CONFIG, "config", {"http": settings})

    return set_http


@pytest.fixture
def server():
    running = TestServer()
    yield running
    running.stop()


@pytest.fixture
def other_server():
    running = TestServer("127.0.0.2")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_server(ca):
    running = TestServer(tls_context=tls_server_context(ca, "localhost"), url_host="localhost")
    yield running
    running.stop()


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- responses ---------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 404, 500, 503])
def test_every_status_is_returned_not_raised(server, status):
    response = http.request("GET", server.url(f"/status/{status}"))

    assert response.status == status
    assert response.data == f"status {status}".encode()


def test_response_unpacks_like_clays_namedtuple(server):
    status, headers, data = http.request("GET", server.url("/json"))

    assert (status, headers["Content-Type"], data) == (
        200,
        "application/json",
        b'{"hello": "world"}',
    )


def test_response_headers_are_case_insensitive(server):
    response = http.request("GET", server.url("/echo"))

    assert response.headers["x-kiln-test"] == response.headers.get("X-KILN-TEST") == "yes"


def test_response_json_decodes_the_body(server):
    assert http.request("GET", server.url("/json")).json() == {"hello": "world"}


def test_response_json_of_a_non_json_body_raises_value_error(server):
    with pytest.raises(ValueError):
        http.request("GET", server.url("/status/200")).json()


def test_request_headers_and_body_reach_the_server(server):
    http.request("PUT", server.url("/echo"), headers={"X-Trace": "abc"}, data="héllo")

    received = server.received[-1]
    assert (received.method, received.headers["X-Trace"]) == ("PUT", "abc")
    assert received.body == "héllo".encode()


def test_json_round_trip_sets_content_type(server):
    response = http.request("POST", server.url("/echo"), json={"name": "ana", "ids": [1, 2]})

    echoed = response.json()
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["body"] == '{"name":"ana","ids":[1,2]}'


def test_json_keeps_a_content_type_given_by_the_caller(server):
    response = http.request(
        "POST", server.url("/echo"), headers={"content-type": "application/x+json"}, json=[1]
    )

    assert response.json()["headers"]["content-type"] == "application/x+json"


@pytest.mark.parametrize(
    ("kwargs", "method"),
    [({}, "GET"), ({"data": b"x"}, "POST"), ({"json": {"a": 1}}, "POST"), ({"data": ""}, "POST")],
)
def test_method_none_means_post_with_a_body_and_get_without(server, kwargs, method):
    http.request(None, server.url("/echo"), **kwargs)

    assert server.received[-1].method == method


def test_explicit_method_wins_and_is_upper_cased(server):
    http.request("delete", server.url("/echo"), data=b"x")

    assert server.received[-1].method == "DELETE"


def test_head_has_an_empty_body(server):
    response = http.request("HEAD", server.url("/echo"))

    assert (response.status, response.data) == (200, b"")


def test_data_and_json_together_are_rejected():
    with pytest.raises(ValueError, match="not both"):
        http.request("POST", "http://127.0.0.1:1/", data=b"x", json={})


def test_data_of_another_type_is_rejected():
    with pytest.raises(TypeError, match="json="):
        http.request("POST", "http://127.0.0.1:1/", data={"a": 1})  # type: ignore[arg-type]


def test_error_responses_are_logged_as_warnings(server, caplog):
    with caplog.at_level(logging.DEBUG, logger="kiln.http"):
        http.request("GET", server.url("/status/404?token=secret"))
        http.request("GET", server.url("/status/200"))

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"404 GET {server.url('/status/404')}"),
        (logging.DEBUG, f"200 GET {server.url('/status/200')}"),
    ]


# -- URLs, methods and headers are checked before any I/O ---------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "127.0.0.1/no-scheme",
        "http:///no-host",
        "http://user:secret@127.0.0.1/",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/\r\nX-Injected: 1",
        "http://127.0.0.1:99999999/",
    ],
)
def test_unsupported_or_malformed_urls_raise_invalid_url_error(url):
    with pytest.raises(http.InvalidURLError) as caught:
        http.request("GET", url)

    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, KilnError)
    assert "secret" not in str(caught.value)


def test_invalid_url_is_rejected_before_any_connection(server):
    with pytest.raises(http.InvalidURLError, match="http:// and https://"):
        http.request("GET", server.url("/echo").replace("http", "ftp", 1))

    assert server.received == []


@pytest.mark.parametrize("method", ["GET\r\nX: 1", "GE T", "", "G\0"])
def test_methods_that_are_not_tokens_are_rejected(server, method):
    with pytest.raises(ValueError, match="Method"):
        http.request(method, server.url("/echo"))

    assert server.received == []


_FORBIDDEN = st.sampled_from(["\r", "\n", "\0"])
_TEXT = st.text(st.characters(codec="latin-1"), max_size=10)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True),
    before=_TEXT,
    bad=_FORBIDDEN,
    after=_TEXT,
    in_name=st.booleans(),
)
def test_header_injection_is_rejected_before_any_io(server, name, before, bad, after, in_name):
    value = "ok"
    if in_name:
        name = f"{name}{bad}{after}"
    else:
        value = f"{before}{bad}{after}"

    with pytest.raises(ValueError, match="Header"):
        http.request("GET", server.url("/echo"), headers={name: value})

    assert server.received == []


@pytest.mark.parametrize(
    "headers", [{"X Space": "v"}, {"X:Colon": "v"}, {"": "v"}, {"X-Number": 1}, {"X-Bytes": b"v"}]
)
def test_malformed_headers_are_rejected(server, headers):
    with pytest.raises(ValueError, match="Header"):
        http.request("GET", server.url("/echo"), headers=headers)

    assert server.received == []


# -- failures raise HTTPError subclasses --------------------------------------


def test_connection_refused_raises_connect_error(closed_port):
    with pytest.raises(http.ConnectError, match="Cannot connect") as caught:
        http.request("GET", f"http://127.0.0.1:{closed_port}/")

    assert isinstance(caught.value, http.HTTPError)
    assert isinstance(caught.value, KilnError)
    assert caught.value.url == f"http://127.0.0.1:{closed_port}/"


def test_unknown_host_raises_connect_error():
    with pytest.raises(http.ConnectError, match="does not resolve"):
        http.request("GET", "http://no-such-host.invalid/")


def test_slow_response_raises_request_timeout_fast(server):
    started = time.monotonic()
    with pytest.raises(http.RequestTimeout, match=r"0\.2 s") as caught:
        http.request("GET", server.url("/sleep/5"), timeout=0.2)

    assert time.monotonic() - started < 2
    assert isinstance(caught.value, TimeoutError)


def test_http_timeout_setting_is_the_default_timeout(server, configure):
    configure(timeout=0.2)
    started = time.monotonic()
    with pytest.raises(http.RequestTimeout):
        http.request("GET", server.url("/sleep/5"))

    assert time.monotonic() - started < 2


def test_timeout_within_the_limit_returns(server):
    assert http.request("GET", server.url("/sleep/0.01"), timeout=5).status == 200


def test_non_positive_timeout_is_rejected(server):
    with pytest.raises(ValueError, match="timeout"):
        http.request("GET", server.url("/echo"), timeout=0)

    assert server.received == []


@pytest.mark.parametrize("path", ["/truncated", "/garbage", "/bad-gzip"])
def test_broken_responses_raise_protocol_error(server, path):
    with pytest.raises(http.ProtocolError) as caught:
        http.request("GET", server.url(path))

    assert isinstance(caught.value, http.HTTPError)


# -- TLS ----------------------------------------------------------------------


def test_https_with_the_configured_ca_succeeds(tls_server, configure, ca_file):
    configure(ca_certs_file=ca_file)

    response = http.request("GET", tls_server.url("/json"))

    assert response.json() == {"hello": "world"}


def test_untrusted_certificate_raises_tls_error(tls_server, configure, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    configure(ca_certs_file=str(other_ca))

    with pytest.raises(http.TLSError, match="certificate verify failed"):
        http.request("GET", tls_server.url("/json"))

    assert tls_server.received == []


def test_certificate_for_another_host_name_raises_tls_error(tls_server, configure, ca_file):
    configure(ca_certs_file=ca_file)

    with pytest.raises(http.TLSError):
        http.request("GET", tls_server.url("/json", host="127.0.0.1"))

    assert tls_server.received == []


def test_system_store_does_not_trust_a_test_ca(tls_server):
    with pytest.raises(http.TLSError):
        http.request("GET", tls_server.url("/json"))


def test_missing_ca_file_is_a_config_error(configure, tmp_path, server):
    configure(ca_certs_file=str(tmp_path / "missing.pem"))

    with pytest.raises(ConfigError, match="does not exist"):
        http.request("GET", server.url("/echo"))


def test_disabled_verification_accepts_any_certificate_and_warns_once(
    tls_server, configure, caplog, monkeypatch
):
    monkeypatch.setattr(http, "_warned_unverified", False)
    configure(verify_server_certificates=False)

    with caplog.at_level(logging.WARNING, logger="kiln.http"):
        first = http.request("GET", tls_server.url("/json", host="127.0.0.1"))
        configure(verify_server_certificates=False, pool_maxsize=3)  # a new pool manager
        second = http.request("GET", tls_server.url("/json"))

    assert first.status == second.status == 200
    warnings = [r for r in caplog.records if "verify_server_certificates is off" in r.message]
    assert len(warnings) == 1


# -- connection pooling ---------------------------------------------------------


def test_sequential_requests_reuse_one_connection(server):
    for _ in range(4):
        http.request("GET", server.url("/echo"))

    assert len({received.client for received in server.received}) == 1
    assert len(server.received) == 4


def test_https_requests_reuse_one_connection(tls_server, configure, ca_file):
    configure(ca_certs_file=ca_file)
    for _ in range(3):
        http.request("GET", tls_server.url("/echo"))

    assert len({received.client for received in tls_server.received}) == 1


def test_changed_settings_build_a_new_pool(server, configure):
    http.request("GET", server.url("/echo"))
    configure(pool_maxsize=2)
    http.request("GET", server.url("/echo"))
    http.request("GET", server.url("/echo"))

    first, second, third = (received.client for received in server.received)
    assert first != second == third
    assert len(http._managers) == 1


def test_threads_share_the_pool(server):

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: http.request("GET", server.url("/echo")), range(20)))

    assert [response.status for response in responses] == [200] * 20
    assert len({received.client for received in server.received}) <= 10


# -- redirects ------------------------------------------------------------------


def redirect(server, to, status=302):
    return server.url(f"/redirect?status={status}&to={quote(to, safe='')}")


def test_redirects_are_followed(server):
    response = http.request("GET", redirect(server, "/json"))

    assert response.json() == {"hello": "world"}
    assert [received.path for received in server.received][-1] == "/json"


def test_relative_redirect_chain_is_followed(server):
    chain = redirect(server, redirect(server, "/json", 301), 308)

    assert http.request("GET", chain).status == 200
    assert len(server.received) == 3


@pytest.mark.parametrize("status", [303, 302, 301])
def test_post_redirected_by_303_302_or_301_becomes_a_bodyless_get(server, status):
    response = http.request("POST", redirect(server, "/echo", status), json={"a": 1})

    echoed = response.json()
    assert (echoed["method"], echoed["body"]) == ("GET", "")
    assert "content-type" not in echoed["headers"]


def test_put_redirected_by_303_becomes_get(server):
    assert http.request("PUT", redirect(server, "/echo", 303), data=b"x").json()["method"] == "GET"


def test_head_redirected_by_303_stays_head(server):
    http.request("HEAD", redirect(server, "/echo", 303))

    assert server.received[-1].method == "HEAD"


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_keep_the_method_and_body(server, status):
    echoed = http.request("POST", redirect(server, "/echo", status), data=b"payload").json()

    assert (echoed["method"], echoed["body"]) == ("POST", "payload")


def test_put_redirected_by_302_keeps_its_method(server):
    assert http.request("PUT", redirect(server, "/echo"), data=b"x").json()["method"] == "PUT"


def test_redirect_loop_raises_too_many_redirects(server, configure):
    configure(max_redirects=3)

    with pytest.raises(http.TooManyRedirects, match="more than 3 times"):
        http.request("GET", server.url("/loop"))

    assert len(server.received) == 4


def test_max_redirects_zero_refuses_every_redirect(server, configure):
    configure(max_redirects=0)

    with pytest.raises(http.TooManyRedirects):
        http.request("GET", redirect(server, "/json"))


def test_follow_redirects_false_returns_the_redirect(server):
    response = http.request("GET", redirect(server, "/json"), follow_redirects=False)

    assert (response.status, response.headers["Location"]) == (302, "/json")


def test_redirect_without_location_is_returned(server):
    assert http.request("GET", server.url("/no-location")).status == 302


def test_redirect_to_another_scheme_raises_invalid_url_error(server):
    with pytest.raises(http.InvalidURLError):
        http.request("GET", redirect(server, "file:///etc/passwd"))


def test_credentials_are_dropped_on_a_cross_origin_redirect(server, other_server):
    credentials = {"Authorization": "Bearer t", "Cookie": "s=1", "X-Other": "kept"}

    http.request("GET", redirect(server, other_server.url("/echo")), headers=credentials)

    headers = other_server.received[-1].headers
    assert "Authorization" not in headers
    assert "Cookie" not in headers
    assert headers["X-Other"] == "kept"


def test_credentials_are_kept_on_a_same_origin_redirect(server):
    http.request("GET", redirect(server, "/echo"), headers={"Authorization": "Bearer t"})

    assert server.received[-1].headers["Authorization"] == "Bearer t"


# -- allow-list and private networks ---------------------------------------------


def test_host_outside_allowed_hosts_is_blocked_before_connecting(server, configure):
    configure(allowed_hosts=["api.example.com"])

    with pytest.raises(http.BlockedHostError, match=r"not in http\.allowed_hosts"):
        http.request("GET", server.url("/echo"))

    assert server.received == []


@pytest.mark.parametrize("allowed", [["127.0.0.1"], ["*"], ["example.com", "127.0.0.1."]])
def test_host_in_allowed_hosts_is_reached(server, configure, allowed):
    configure(allowed_hosts=allowed)

    assert http.request("GET", server.url("/echo")).status == 200


def test_redirect_to_a_host_outside_allowed_hosts_is_blocked(server, other_server, configure):
    configure(allowed_hosts=["127.0.0.1"])

    with pytest.raises(http.BlockedHostError, match=r"127\.0\.0\.2"):
        http.request("GET", redirect(server, other_server.url("/echo")))

    assert len(server.received) == 1
    assert other_server.received == []


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("API.example.com", "api.EXAMPLE.com", False),  # hosts arrive lower-cased
        ("api.example.com", "*.example.com", True),
        ("a.b.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("badexample.com", "*.example.com", False),
        ("anything", "*", True),
        ("::1", "[::1]", True),
        ("example.com", "example.com.", True),
    ],
)
def test_allowed_host_patterns(host, pattern, matches):
    assert http._host_matches(host, pattern) is matches


@pytest.mark.parametrize("pattern", ["api.*.com", "*example.com", 42, "**"])
def test_malformed_allowed_host_pattern_is_a_config_error(server, configure, pattern):
    configure(allowed_hosts=[pattern])

    with pytest.raises(ConfigError, match=r"http\.allowed_hosts"):
        http.request("GET", server.url("/echo"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_blocked_before_connecting(server, configure, host):
    configure(block_private_networks=True)

    with pytest.raises(http.BlockedHostError, match="block_private_networks"):
        http.request("GET", server.url("/echo", host=host))

    assert server.received == []


def test_https_to_a_private_address_is_blocked_before_the_handshake(tls_server, configure, ca_file):
    configure(block_private_networks=True, ca_certs_file=ca_file)

    with pytest.raises(http.BlockedHostError):
        http.request("GET", tls_server.url("/echo"))

    assert tls_server.received == []


def test_allowed_private_network_is_reached(server, configure):
    configure(block_private_networks=True, allowed_private_networks=["127.0.0.1/32"])

    assert http.request("GET", server.url("/echo", host="localhost")).status == 200


def test_allowed_private_network_is_reached_over_https(tls_server, configure, ca_file):
    configure(
        block_private_networks=True,
        allowed_private_networks=["127.0.0.0/30"],
        ca_certs_file=ca_file,
    )

    assert http.request("GET", tls_server.url("/json")).json() == {"hello": "world"}


def test_redirect_to_private_address_is_blocked(server, other_server, configure):
    configure(block_private_networks=True, allowed_private_networks=["127.0.0.1/32"])

    with pytest.raises(http.BlockedHostError, match=r"127\.0\.0\.2"):
        http.request("GET", redirect(server, other_server.url("/echo")))

    assert len(server.received) == 1
    assert other_server.received == []


def test_refused_connection_to_an_allowed_private_network_raises_connect_error(
    configure, closed_port
):
    configure(block_private_networks=True, allowed_private_networks=["127.0.0.1/32"])

    with pytest.raises(http.ConnectError, match="Cannot connect"):
        http.request("GET", f"http://127.0.0.1:{closed_port}/")


def test_unknown_host_with_blocking_on_raises_connect_error(configure):
    configure(block_private_networks=True)

    with pytest.raises(http.ConnectError, match="does not resolve"):
        http.request("GET", "http://no-such-host.invalid/")


def test_malformed_allowed_private_network_is_a_config_error(configure, server):
    configure(block_private_networks=True, allowed_private_networks=["10.0.0.0/99"])

    with pytest.raises(ConfigError, match="CIDR"):
        http.request("GET", server.url("/echo"))


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata endpoints
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_private_network_classification(address, blocked):
    assert http._AddressGuard([]).blocks(address) is blocked


def test_allowed_private_networks_exempt_addresses():
    guard = http._AddressGuard(["10.1.0.0/16", "fd00::/8"])

    assert not guard.blocks("10.1.2.3")
    assert not guard.blocks("fd00::1")
    assert guard.blocks("10.2.0.1")


def test_settings_are_registered_for_validation():
    problems = kiln.config.validate({"http": {"timeout": "10", "block_private_networks": 1}})

    assert any("http.timeout" in problem for problem in problems)
    assert any("http.block_private_networks" in problem for problem in problems)
    assert all(
        kiln.config.SETTINGS[key].reload for key in kiln.config.SETTINGS if key.startswith("http.")
    )


# -- cache_control ---------------------------------------------------------------


def cached_app(view, rule="/"):
    app = flask.Flask("cache_test")
    app.add_url_rule(rule, view_func=view)
    return app.test_client()


def test_manuals_cache_control_example(make_app):
    app = make_app()

    @app.route("/hello_cache", methods=["GET"])
    @http.cache_control(max_age=3600, public=True)
    def hello_cache():
        return "Hi!"

    response = app.test_client().get("/hello_cache")

    assert response.status_code == 200
    assert response.text == "Hi!"
    assert response.headers["Cache-Control"] == "max-age=3600, public"


def test_clays_hello_world_cache_control_keeps_argument_order():
    @http.cache_control(max_age=3600, public=True, no_cache="Cookies")
    def hello():
        return "Hello, world!"

    response = cached_app(hello).get("/")

    assert response.headers["Cache-Control"] == 'max-age=3600, public, no-cache="Cookies"'


@pytest.mark.parametrize(
    ("directives", "header"),
    [
        ({"public": True, "max_age": 60}, "public, max-age=60"),
        ({"no_store": False, "private": True}, "private"),
        ({"no_store": None, "must_revalidate": True}, "must-revalidate"),
        ({"s_maxage": 0, "stale_while_revalidate": 30}, "s-maxage=0, stale-while-revalidate=30"),
        ({"stale_if_error": 86400, "immutable": True}, "stale-if-error=86400, immutable"),
        ({"private": 'x"y\\z'}, r'private="x\"y\\z"'),
        (
            {"no_transform": True, "proxy_revalidate": True, "must_understand": True},
            "no-transform, proxy-revalidate, must-understand",
        ),
    ],
)
def test_cache_control_directive_formatting(directives, header):
    @http.cache_control(**directives)
    def view():
        return "ok"

    assert cached_app(view).get("/").headers["Cache-Control"] == header


@pytest.mark.parametrize(
    "rv",
    [
        {"hello": "world"},
        ("created", 201),
        ("created", 201, {"X-Extra": "1"}),
        flask.Response("made", status=202),
        ["a", "list"],
    ],
)
def test_cache_control_works_with_every_view_return_type(rv):
    @http.cache_control(no_cache=True)
    def view():
        return rv

    response = cached_app(view).get("/")

    assert response.headers["Cache-Control"] == "no-cache"
    assert response.status_code in (200, 201, 202)


def test_cache_control_replaces_the_views_header():
    @http.cache_control(no_store=True)
    def view():
        return "x", 200, {"Cache-Control": "public"}

    assert cached_app(view).get("/").headers["Cache-Control"] == "no-store"


def test_cache_control_with_every_directive_omitted_keeps_the_views_header():
    @http.cache_control(no_store=False)
    def view():
        return "x", 200, {"Cache-Control": "public"}

    assert cached_app(view).get("/").headers["Cache-Control"] == "public"


def test_cache_control_passes_view_arguments_and_keeps_the_name():
    @http.cache_control(public=True)
    def item(item_id):
        return {"id": item_id}

    assert item.__name__ == "item"
    assert cached_app(item, "/items/<int:item_id>").get("/items/7").json == {"id": 7}


@pytest.mark.parametrize(
    ("directives", "message"),
    [
        ({"max_ages": 1}, "not a Cache-Control response directive"),
        ({"no_cache_please": True}, "not a Cache-Control response directive"),
        ({"only_if_cached": True}, "not a Cache-Control response directive"),  # a request directive
        ({"max_age": True}, "number of seconds"),
        ({"max_age": "3600"}, "number of seconds"),
        ({"s_maxage": -1}, "number of seconds"),
        ({"no_cache": "Set-Cookie\r\nX: 1"}, "CR, LF or NUL"),
    ],
)
def test_cache_control_rejects_bad_directives_at_decoration_time(directives, message):
    with pytest.raises(ValueError, match=message):
        http.cache_control(**directives)


def test_cache_control_rejects_values_of_other_types():
    with pytest.raises(TypeError, match="private must be"):
        http.cache_control(private=1.5)  # type: ignore[arg-type]


def test_cache_control_integer_on_a_flag_directive_is_written_as_is():
    @http.cache_control(public=1)
    def view():
        return "x"

    assert cached_app(view).get("/").headers["Cache-Control"] == "public=1"
