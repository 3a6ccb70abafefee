from __future__ import annotations

import logging

import pytest

import kiln
from tests.resource.conftest import PREFIX
from tests.resource.sample_resources import EXPLODE

BATCH = f"{PREFIX}/batch"


def send(client, body, **kwargs):
    return client.post(BATCH, json=body, **kwargs)


def responses(client, body):
    rv = send(client, body)
    assert rv.status_code == 200, rv.get_json()
    return rv.get_json()["responses"]


def assert_invalid(rv, name=None):
    assert rv.status_code == 400
    body = rv.get_json()
    assert body["errno"] == 107
    if name is not None:
        assert body["details"][0]["name"] == name


def test_defaults_are_deep_merged_into_each_request(client):
    answers = responses(
        client,
        {
            "defaults": {
                "method": "POST",
                "path": "/notes",
                "headers": {"Response-Behavior": "full"},
                "body": {"data": {"a": 1, "nested": {"x": 1}}},
            },
            "requests": [
                {"body": {"data": {"b": 2, "nested": {"y": 2}}}},
                {"method": "PUT", "path": "/articles/hello", "body": {"data": {"a": 3}}},
            ],
        },
    )
    first, second = answers
    assert first["status"] == 201
    assert first["body"]["data"]["a"] == 1
    assert first["body"]["data"]["b"] == 2
    assert first["body"]["data"]["nested"] == {"x": 1, "y": 2}
    assert (second["status"], second["path"]) == (201, f"{PREFIX}/articles/hello")
    assert second["body"]["data"]["a"] == 3
    assert second["body"]["data"]["nested"] == {"x": 1}


def test_responses_come_in_order_with_status_path_headers_and_body(client):
    answers = responses(
        client,
        {
            "requests": [
                {"method": "POST", "path": "/notes", "body": {"data": {"n": 1}}},
                {"path": "/v1/notes"},
                {"method": "HEAD", "path": "/notes"},
                {"path": "/notes/nope"},
            ]
        },
    )
    assert [a["status"] for a in answers] == [201, 200, 200, 400]
    assert [a["path"] for a in answers] == [f"{PREFIX}/notes"] * 3 + [f"{PREFIX}/notes/nope"]
    created, listed, head, invalid = answers
    assert listed["body"]["data"] == [created["body"]["data"]]
    assert listed["headers"]["ETag"] == f'"{created["body"]["data"]["last_modified"]}"'
    assert head["body"] == ""
    assert head["headers"]["Total-Records"] == "1"
    assert invalid["body"]["errno"] == 107


def test_the_path_is_reported_decoded(client):
    (answer,) = responses(client, {"requests": [{"path": "/notes?a=%22x%20y%22"}]})
    assert answer["path"] == f"{PREFIX}/notes"
    (answer,) = responses(client, {"requests": [{"path": "/articles/h%C3%A9llo"}]})
    assert answer["path"] == f"{PREFIX}/articles/héllo"
    assert answer["status"] == 400


def test_a_4xx_sub_response_keeps_the_batch_at_200_and_the_other_writes_commit(client):
    answers = responses(
        client,
        {
            "defaults": {"method": "POST", "path": "/mushrooms"},
            "requests": [
                {"body": {"data": {"name": "a"}}},
                {"body": {"data": {"size": "no name"}}},
                {"body": {"data": {"name": "b"}}},
            ],
        },
    )
    assert [a["status"] for a in answers] == [201, 400, 201]
    listed = client.get(f"{PREFIX}/mushrooms").get_json()["data"]
    assert {r["name"] for r in listed} == {"a", "b"}


def test_a_sub_request_that_raises_fails_the_whole_batch_and_applies_nothing(client, caplog):
    client.put(f"{PREFIX}/articles/kept", json={"data": {"title": "before"}})
    before = client.get(f"{PREFIX}/articles").get_json()["data"]
    with caplog.at_level(logging.ERROR, logger="kiln.errors"):
        rv = send(
            client,
            {
                "requests": [
                    {"method": "POST", "path": "/notes", "body": {"data": {"n": 1}}},
                    {"method": "PATCH", "path": "/articles/kept", "body": {"data": {"x": 1}}},
                    {"method": "DELETE", "path": "/articles/kept"},
                    {"method": "PUT", "path": "/articles/new", "body": {"data": {"title": "t"}}},
                    {"method": "POST", "path": "/articles", "body": {"data": {"title": EXPLODE}}},
                    {"method": "POST", "path": "/notes", "body": {"data": {"n": 2}}},
                ]
            },
        )
    assert rv.status_code == 500
    assert rv.get_json()["errno"] == 999
    assert "Traceback" not in rv.get_data(as_text=True)
    assert client.get(f"{PREFIX}/notes").get_json()["data"] == []
    assert client.get(f"{PREFIX}/articles?_since=0").get_json()["data"] == before
    assert client.get(f"{PREFIX}/articles/new").status_code == 404


def test_the_same_exploding_request_alone_answers_500_and_writes_nothing(client):
    rv = client.post(f"{PREFIX}/articles", json={"data": {"title": EXPLODE}})
    assert rv.status_code == 500
    assert client.get(f"{PREFIX}/articles").get_json()["data"] == []


@pytest.mark.parametrize("path", ["/notes/", "/v1/notes/", "/notes/?a=1"])
def test_a_trailing_slash_redirect_is_followed_with_its_body(client, path):
    (answer,) = responses(
        client, {"requests": [{"method": "POST", "path": path, "body": {"data": {"a": 1}}}]}
    )
    assert answer["status"] == 201
    assert answer["path"] == f"{PREFIX}/notes"
    assert answer["body"]["data"]["a"] == 1


def test_redirects_are_followed_a_bounded_number_of_times(client):
    (answer,) = responses(client, {"requests": [{"path": "/loop"}]})
    assert answer["status"] == 307


def test_a_non_json_sub_response_body_is_returned_as_a_string(client):
    (answer,) = responses(client, {"requests": [{"path": "/text"}]})
    assert answer["body"] == "plain text"


def test_sub_requests_inherit_the_batch_headers_overridden_by_their_own(client):
    body = {
        "requests": [
            {"path": "/notes"},
            {"path": "/notes", "headers": {"Accept": "application/json"}},
        ]
    }
    answers = send(client, body, headers={"Accept": "text/html, application/json;q=0.5"})
    assert answers.status_code == 200
    answers = send(client, body, headers={"X-Unused": "1", "If-None-Match": "nope"})
    assert [a["status"] for a in answers.get_json()["responses"]] == [400, 400]


@pytest.mark.parametrize("path", ["/batch", "/v1/batch", "/batch?x=1", "/v1/batch/"])
def test_a_recursive_batch_is_refused(client, path):
    assert_invalid(
        send(client, {"requests": [{"method": "POST", "path": path}]}), "requests.0.path"
    )


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"requests": [{"path": "/notes"}], "extra": 1}, "extra"),
        ({"requests": [{"path": "/notes", "extra": 1}]}, "requests.0.extra"),
        ({"defaults": {"extra": 1}, "requests": [{"path": "/notes"}]}, "requests.0.extra"),
        ({"defaults": [], "requests": [{"path": "/notes"}]}, "defaults"),
        ({"requests": []}, "requests"),
        ({"requests": {"path": "/notes"}}, "requests"),
        ({}, "requests"),
        ([], "body"),
        ({"requests": ["/notes"]}, "requests.0"),
        ({"requests": [{"path": "/notes", "method": "OPTIONS"}]}, "requests.0.method"),
        ({"requests": [{"path": "/notes", "method": 3}]}, "requests.0.method"),
        ({"requests": [{"path": "notes"}]}, "requests.0.path"),
        ({"requests": [{"path": "//evil.example/notes"}]}, "requests.0.path"),
        ({"requests": [{"path": "/notes\r\nX: 1"}]}, "requests.0.path"),
        ({"requests": [{"method": "GET"}]}, "requests.0.path"),
        ({"requests": [{"path": "/notes", "headers": {"A": 1}}]}, "requests.0.headers"),
        ({"requests": [{"path": "/notes", "headers": ["A"]}]}, "requests.0.headers"),
        ({"requests": [{"path": "/notes", "headers": {"A": "x\r\nB: y"}}]}, "requests.0.headers"),
        ({"requests": [{"path": "/notes", "method": "POST", "body": "x"}]}, "requests.0.body"),
    ],
)
def test_a_malformed_batch_is_refused(client, body, name):
    assert_invalid(send(client, body), name)


def test_a_batch_body_that_is_not_json_is_refused(client):
    assert_invalid(client.post(BATCH, data=b"{", content_type="application/json"), "body")
    assert_invalid(client.post(BATCH, data=b"", content_type="application/json"), "body")
    rv = client.post(BATCH, data=b"{}", content_type="text/plain")
    assert rv.status_code == 415


def test_other_methods_on_batch_answer_405(client):
    assert client.get(BATCH).status_code == 405


@pytest.mark.parametrize(("limit", "count", "status"), [(3, 3, 200), (3, 4, 400), (0, 30, 200)])
def test_max_requests_limits_the_batch(build_app, limit, count, status):
    client = build_app({"batch": {"max_requests": limit}}).test_client()
    rv = send(client, {"requests": [{"path": "/notes"}] * count})
    assert rv.status_code == status
    if status == 400:
        assert f"limited to {limit}" in rv.get_json()["message"]


def test_the_default_limit_is_25(client):
    assert send(client, {"requests": [{"path": "/notes"}] * 25}).status_code == 200
    assert_invalid(send(client, {"requests": [{"path": "/notes"}] * 26}), "requests")


def test_the_hello_view_shows_the_batch_limit(client):
    assert client.get(f"{PREFIX}/").get_json()["settings"]["batch_max_requests"] == 25


def test_a_batch_works_on_an_app_without_resources():
    app = kiln.create_app({"project": {"name": "bare"}}, configure_logging=False)
    rv = app.test_client().post(BATCH, json={"requests": [{"path": "/__lbheartbeat__"}]})
    assert rv.get_json()["responses"][0]["status"] == 200


def test_a_batch_of_writes_is_one_transaction_visible_to_its_own_reads(client):
    answers = responses(
        client,
        {
            "requests": [
                {"method": "PUT", "path": "/articles/a", "body": {"data": {"title": "t"}}},
                {"method": "PATCH", "path": "/articles/a", "body": {"data": {"title": "u"}}},
                {"path": "/articles/a"},
                {"method": "DELETE", "path": "/articles/a"},
                {"path": "/articles/a"},
            ]
        },
    )
    assert [a["status"] for a in answers] == [201, 200, 200, 200, 404]
    assert answers[2]["body"]["data"]["revision"] == 2
