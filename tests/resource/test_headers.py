from __future__ import annotations

import email.utils
import time

import orjson
import pytest

from tests.resource.conftest import Caller, create


@pytest.mark.parametrize("path", ["/notes", "/notes/{id}", "/notes?_limit=1"])
def test_reads_vary_on_authorization_and_origin_and_are_not_cached(caller, path):
    record = create(caller, "/notes", {})
    rv = caller.both("GET", path.format(id=record["id"]))
    assert rv.headers["Cache-Control"] == "no-cache"
    assert {v.strip() for v in rv.headers["Vary"].split(",")} >= {"Authorization", "Origin"}
    assert "Expires" not in rv.headers


@pytest.mark.parametrize("seconds", [0, 60])
def test_cache_expires_seconds_sends_max_age_and_expires(build_app, seconds):
    app = build_app({"note": {"cache_expires_seconds": seconds}})
    caller = Caller(app.test_client(), "direct")
    record = create(caller, "/notes", {})
    for path in ("/notes", f"/notes/{record['id']}"):
        rv = caller.both("GET", path)
        assert rv.headers["Cache-Control"] == f"max-age={seconds}"
        expires = email.utils.parsedate_to_datetime(rv.headers["Expires"]).timestamp()
        assert abs(expires - (time.time() + seconds)) < 5
    assert caller.direct("GET", "/mushrooms").headers["Cache-Control"] == "no-cache"


def test_responses_are_json_with_unescaped_slashes(caller):
    record = create(caller, "/notes", {"url": "http://x/y"})
    raw = orjson.dumps(caller.both("GET", f"/notes/{record['id']}").body)
    assert b"http://x/y" in raw
