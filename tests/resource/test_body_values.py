from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": {"name": "a\\u0000b"}}',
        b'{"data": {"name": "a", "tags": ["x", "\\u0000"]}}',
        b'{"data": {"name": "a", "author": {"k\\u0000": 1}}}',
    ],
)
def test_a_nul_character_in_a_body_is_a_400_on_every_backend(client, raw):
    response = client.post("/v1/mushrooms", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "NUL" in response.json["message"]
    assert client.get("/v1/mushrooms").json["data"] == []


def test_an_escaped_backslash_before_u0000_is_plain_text(client):
    raw = b'{"data": {"name": "a\\\\u0000b"}}'
    response = client.post("/v1/mushrooms", data=raw, content_type="application/json")
    assert response.status_code == 201
    assert response.json["data"]["name"] == "a\\u0000b"


def test_a_nul_in_a_batch_sub_request_is_its_400(client):
    requests = [{"method": "POST", "path": "/mushrooms", "body": {"data": {"name": "a\x00"}}}]
    response = client.post("/v1/batch", json={"requests": requests})
    assert response.json["responses"][0]["status"] == 400


@pytest.mark.parametrize("value", [-1, 253_402_300_800_000, 9_223_372_036_854_775_806, 1.5, True])
def test_a_forced_last_modified_out_of_range_is_a_400(client, value):
    body = {"data": {"name": "a", "last_modified": value}}
    response = client.post("/v1/mushrooms", json=body)
    assert response.status_code == 400
    assert response.json["details"][0]["name"] == "data.last_modified"


def test_a_forced_last_modified_on_delete_out_of_range_is_a_400(client):
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    path = f"/v1/mushrooms/{created['id']}?last_modified=9223372036854775806"
    assert client.delete(path).status_code == 400
    assert (
        client.delete(f"/v1/mushrooms/{created['id']}?last_modified=253402300799999").status_code
        == 200
    )


def test_formats_of_the_schema_are_checked(build_app):
    from kiln import resource

    @resource.register(name="dated")
    class Dated(resource.Resource):
        schema = {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}

    app = build_app({"views": ["tests.resource.sample_resources", __name__]})
    client = app.test_client()
    assert client.post("/v1/dateds", json={"data": {"day": "2024-13-01"}}).status_code == 400
    assert client.post("/v1/dateds", json={"data": {"day": "2024-12-01"}}).status_code == 201


@pytest.mark.parametrize("etag", ['"²"', '"١٢"', '"' + "9" * 5000 + '"'])
@pytest.mark.parametrize("header", ["If-None-Match", "If-Match"])
def test_a_precondition_that_is_not_a_plain_timestamp_is_a_400(client, header, etag):
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    response = client.get(f"/v1/mushrooms/{created['id']}", headers={header: etag})
    assert response.status_code == 400
    assert response.json["details"][0]["name"] == header


def test_a_forced_last_modified_in_other_digits_is_a_400(client):
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    assert client.delete(f"/v1/mushrooms/{created['id']}?last_modified=²").status_code == 400
