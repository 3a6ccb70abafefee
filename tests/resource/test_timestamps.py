from __future__ import annotations

import email.utils
import time

import pytest

from tests.resource.conftest import PREFIX, assert_error


def test_a_record_timestamp_equals_the_collection_etag_after_a_write(call, caller):
    record = call("POST", "/notes", {"data": {}}).data
    listing = caller.both("GET", "/notes")
    assert listing.headers["ETag"] == f'"{record["last_modified"]}"'


def test_an_empty_collection_has_a_stable_etag_without_writing(caller):
    first = caller.both("GET", "/notes")
    assert first.headers["ETag"] == caller.both("GET", "/notes").headers["ETag"]


def test_rapid_writes_get_distinct_increasing_timestamps(call, client):
    stamps = [call("POST", "/notes", {"data": {"n": n}}).data["last_modified"] for n in range(15)]
    batch = client.post(
        f"{PREFIX}/batch",
        json={
            "defaults": {"method": "POST", "path": "/notes"},
            "requests": [{"body": {"data": {"n": n}}} for n in range(15)],
        },
    )
    stamps += [r["body"]["data"]["last_modified"] for r in batch.get_json()["responses"]]
    assert stamps == sorted(set(stamps))
    assert len(stamps) == 30


def test_etag_is_quoted_and_last_modified_is_an_http_date(call):
    record = call("POST", "/notes", {"data": {}}).data
    rv = call("GET", f"/notes/{record['id']}")
    assert rv.headers["ETag"] == f'"{record["last_modified"]}"'
    expected = email.utils.formatdate(record["last_modified"] / 1000, usegmt=True)
    assert rv.headers["Last-Modified"] == expected


@pytest.mark.parametrize("value", ["1", 1.5, True, None])
def test_a_non_integer_last_modified_in_the_body_answers_400(call, value):
    rv = call("POST", "/notes", {"data": {"last_modified": value}})
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "data.last_modified"


def test_a_later_last_modified_in_the_body_is_kept_on_create(call):
    forced = int(time.time() * 1000) + 10_000_000
    assert (
        call("POST", "/notes", {"data": {"last_modified": forced}}).data["last_modified"] == forced
    )
