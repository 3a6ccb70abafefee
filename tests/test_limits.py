"""kiln's own limits on the URL and the header fields (#15 item 9)."""

from __future__ import annotations

import pytest

import kiln
from kiln._limits import _target_length, request_limit_error
from kiln.config import Configuration


@pytest.fixture
def client():
    app = kiln.create_app(
        {"views": ["tests.resource.sample_resources"], "request": {"max_url_bytes": 100}},
        configure_logging=False,
    )
    return app.test_client()


@pytest.mark.parametrize("path", ["/v1/mushrooms", "/v1/", "/v1/nowhere/", "/__heartbeat__"])
def test_a_url_over_the_limit_is_a_json_414_on_every_path(client, path):
    response = client.get(f"{path}?q={'a' * 100}")
    assert response.status_code == 414
    assert response.json["errno"] == 107
    assert "this service accepts at most 100" in response.json["message"]
    assert client.get(f"{path}?q=a").status_code != 414


def test_header_fields_over_the_limits_are_a_json_431(client):
    response = client.get("/v1/mushrooms", headers={"X-Big": "b" * 8190})
    assert response.status_code == 431
    assert response.json["message"] == (
        "Header field X-Big is 8197 bytes long; this service accepts at most 8190."
    )
    response = client.post(
        "/v1/mushrooms",
        data="{}",
        headers={"Content-Type": "application/json; x=" + "c" * 8190},
    )
    assert response.status_code == 431
    assert "Header field Content-Type is" in response.json["message"]
    response = client.get("/v1/", headers={f"X-Field-{n}": "1" for n in range(100)})
    assert response.status_code == 431
    assert "header fields; this service accepts at most 100." in response.json["message"]
    assert client.get("/v1/", headers={"X-Big": "b" * 8000}).status_code == 200


def test_the_limits_follow_a_reload():
    config = Configuration.from_mapping({"request": {"max_url_bytes": 10}})
    environ = {"PATH_INFO": "/v1/records", "QUERY_STRING": ""}
    assert request_limit_error(config, environ).status == 414
    config.set("request.max_url_bytes", 11)
    assert request_limit_error(config, environ) is None


def test_the_url_length_is_the_target_the_client_sent():
    assert _target_length({"RAW_URI": "/a?b=c", "PATH_INFO": "/ignored"}) == 6
    assert _target_length({"REQUEST_URI": "/a?b"}) == 4
    assert _target_length({"SCRIPT_NAME": "/app", "PATH_INFO": "/a", "QUERY_STRING": "q=1"}) == 10
    assert _target_length({"PATH_INFO": "/a", "QUERY_STRING": ""}) == 2


@pytest.mark.parametrize(
    "key", ["request.max_url_bytes", "request.max_headers", "request.max_header_bytes"]
)
def test_the_limits_must_be_positive(key):
    from kiln.config import SETTINGS

    assert SETTINGS[key].check(0) == "must be positive"
    assert SETTINGS[key].check(1) is None
