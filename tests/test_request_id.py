from __future__ import annotations

import logging
import re

import pytest

import kiln

VIEWS = ["tests.resource.sample_resources"]
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(params=[False, True], ids=["fast path", "flask path"])
def client(request, tmp_path):
    app = kiln.create_app(
        {"views": VIEWS, "storage": {"backend": "memory"}}, configure_logging=False
    )
    if request.param:
        app.before_request(lambda: None)  # resource requests go through Flask
    yield app.test_client()
    kiln.application.close_app(app)


@pytest.mark.parametrize("path", ["/v1/mushrooms", "/v1/", "/v1/nowhere"])
def test_a_well_formed_request_id_is_echoed_and_logged(client, caplog, path):
    given = "Root=1-5759e988-bd862e3fe1be46a994272793:p.x/y+z==_"
    with caplog.at_level(logging.INFO, "request.summary"):
        response = client.get(path, headers={"X-Request-Id": given})
    assert response.headers["X-Request-Id"] == given
    [summary] = [r for r in caplog.records if r.name == "request.summary"]
    assert summary.fields["rid"] == given


def test_the_longest_request_id_is_accepted(client):
    given = "a" * 128
    assert (
        client.get("/v1/mushrooms", headers={"X-Request-Id": given}).headers["X-Request-Id"]
        == given
    )


def test_a_request_without_an_id_gets_a_new_one_each_time(client, caplog):
    with caplog.at_level(logging.INFO, "request.summary"):
        first = client.get("/v1/mushrooms").headers["X-Request-Id"]
        second = client.get("/v1/mushrooms").headers["X-Request-Id"]
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second
    assert [r.fields["rid"] for r in caplog.records] == [first, second]


@pytest.mark.parametrize(
    "given",
    ["a" * 129, "abc\r\nSet-Cookie: x=1", "abc\ndef", "caf\xc3\xa9", "a b", "", "<script>"],
    ids=["too long", "CR LF", "LF", "non-ASCII", "space", "empty", "markup"],
)
def test_a_malformed_request_id_is_replaced_never_echoed(client, caplog, given):
    with caplog.at_level(logging.INFO, "request.summary"):
        response = client.get("/v1/mushrooms", environ_overrides={"HTTP_X_REQUEST_ID": given})
    assert response.status_code == 200
    sent = response.headers["X-Request-Id"]
    assert GENERATED.fullmatch(sent)
    assert [r.fields["rid"] for r in caplog.records] == [sent]


def test_batch_sub_requests_carry_the_batch_id_in_their_logs_only(client, caplog):
    body = {"requests": [{"path": "/mushrooms"}, {"path": "/"}]}
    with caplog.at_level(logging.INFO, "subrequest.summary"):
        response = client.post("/v1/batch", json=body, headers={"X-Request-Id": "batch-1"})
    assert response.headers["X-Request-Id"] == "batch-1"
    for answer in response.json["responses"]:
        assert answer["status"] == 200
        assert "X-Request-Id" not in answer["headers"]
    subrequests = [r for r in caplog.records if r.name == "subrequest.summary"]
    assert [r.fields["rid"] for r in subrequests] == ["batch-1", "batch-1"]
