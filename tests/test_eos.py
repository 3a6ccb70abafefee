from __future__ import annotations

import datetime

import orjson
import pytest

from kiln import create_app
from kiln.config import Configuration
from kiln.exceptions import ConfigError


def day(offset):
    return (
        datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=offset)
    ).isoformat()


def client(**tree):
    return create_app(tree, configure_logging=False).test_client()


def test_before_the_date_every_response_carries_a_soft_alert():
    c = client(
        eos={"date": day(30), "message": "Moving to v2"},
        project={"docs": "https://docs.example"},
    )
    for path in ("/v1/", "/v1/missing", "/__heartbeat__"):
        alert = orjson.loads(c.get(path).headers["Alert"])
        assert alert == {
            "code": "soft-eol",
            "message": "Moving to v2",
            "url": "https://docs.example",
        }


def test_the_hello_view_announces_the_end_of_service():
    body = client(eos={"date": day(3), "url": "https://next.example"}).get("/v1/").json
    assert body["eos"] == {"date": day(3), "message": None, "url": "https://next.example"}


@pytest.mark.parametrize("offset", [0, -1])
def test_from_the_date_on_requests_get_410_errno_202_with_a_hard_alert(offset):
    response = client(eos={"date": day(offset)}).get("/v1/")
    assert response.status_code == 410
    assert response.json["errno"] == 202
    assert "no longer exists" in response.json["message"]
    assert orjson.loads(response.headers["Alert"])["code"] == "hard-eol"


def test_preflights_still_pass_after_the_date():
    response = client(eos={"date": day(-1)}).options(
        "/v1/", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 200


def test_no_date_no_alert():
    response = client().get("/v1/")
    assert "Alert" not in response.headers
    assert "eos" not in response.json


def test_a_malformed_date_fails_startup():
    with pytest.raises(ConfigError, match=r"'eos\.date'.*must be a date like"):
        Configuration.from_mapping({"eos": {"date": "next tuesday"}}).load()
