from __future__ import annotations

import base64

ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}


def test_anyone_reads_the_catalogue_but_changing_it_takes_a_login(example_app):
    client = example_app.test_client()
    assert client.post("/v1/mushrooms", json={"data": {"name": "Cep"}}).status_code == 401
    created = client.post("/v1/mushrooms", json={"data": {"name": "Cep"}}, headers=ALICE)
    assert created.status_code == 201
    record = f"/v1/mushrooms/{created.json['data']['id']}"
    assert [r["name"] for r in client.get("/v1/mushrooms").json["data"]] == ["Cep"]
    assert client.get(record).status_code == 200
    assert client.delete("/v1/mushrooms").status_code == 401
    assert client.delete(record).status_code == 401
    assert client.patch(record, json={"data": {"edible": True}}).status_code == 401
    sighting = {"data": {"place": "the old oak"}}
    assert client.post(f"{record}/sightings", json=sighting).status_code == 401
    assert client.post(f"{record}/sightings", json=sighting, headers=ALICE).status_code == 201
    assert client.get(f"{record}/sightings").status_code == 200
    assert [r["name"] for r in client.get("/v1/mushrooms").json["data"]] == ["Cep"]
