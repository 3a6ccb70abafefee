from __future__ import annotations

import pytest

import kiln
from kiln.exceptions import TransientBackendError
from kiln.resource.events import subscribe


@pytest.fixture
def app(tmp_path):
    return kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {"backend": "sqlite", "url": str(tmp_path / "r.sqlite")},
        },
        configure_logging=False,
    )


def conflict_on(monkeypatch, storage, method, times):
    """The engine aborts the first ``times`` calls of ``method`` (a deadlock, say): ``apply``
    is the flush of a unit of work."""
    real = getattr(storage, method)
    calls = []

    def aborting(*args, **kwargs):
        calls.append(args)
        if len(calls) <= times:
            raise TransientBackendError("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, method, aborting)
    return calls


def test_a_request_the_database_aborts_runs_again_and_succeeds(app, monkeypatch):
    client = app.test_client()
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    events = []
    subscribe(app, lambda event: events.append(event), actions=("update",))
    calls = conflict_on(monkeypatch, app.extensions["kiln"].storage, "apply", 2)
    response = client.patch(f"/v1/mushrooms/{created['id']}", json={"data": {"size": 3}})
    assert response.status_code == 200
    assert response.json["data"]["size"] == 3
    assert len(calls) == 3
    assert len(events) == 1


def test_a_request_that_keeps_conflicting_answers_503_after_the_retries(app, monkeypatch):
    client = app.test_client()
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    calls = conflict_on(monkeypatch, app.extensions["kiln"].storage, "apply", 100)
    response = client.patch(f"/v1/mushrooms/{created['id']}", json={"data": {"size": 3}})
    assert response.status_code == 503
    assert response.json["errno"] == 201
    assert "Retry-After" in response.headers
    assert len(calls) == 4  # the first try and storage.transaction_retries (3) more
    assert client.get(f"/v1/mushrooms/{created['id']}").json["data"].get("size") is None


@pytest.mark.parametrize("through_flask", [False, True])
def test_a_batch_runs_again_as_a_whole_and_applies_once(app, monkeypatch, through_flask):
    if through_flask:
        # A hook kiln did not install: the sub-requests go through Flask's
        # error handlers, which must still let the conflict rerun the batch.
        app.before_request(lambda: None)
    client = app.test_client()
    created = client.post("/v1/mushrooms", json={"data": {"name": "a"}}).json["data"]
    calls = conflict_on(monkeypatch, app.extensions["kiln"].storage, "apply", 1)
    requests = [
        {"method": "POST", "path": "/mushrooms", "body": {"data": {"name": "b"}}},
        {"method": "PATCH", "path": f"/mushrooms/{created['id']}", "body": {"data": {"size": 1}}},
        {"method": "POST", "path": "/mushrooms", "body": {"data": {"name": "c"}}},
    ]
    response = client.post("/v1/batch", json={"requests": requests})
    assert response.status_code == 200, response.json
    assert [r["status"] for r in response.json["responses"]] == [201, 200, 201]
    # The first flush was aborted; the batch ran again from its first sub-request.
    (aborted,) = calls[0]
    assert [write.record["name"] for write in aborted] == ["b"]
    rerun = [write.record for (writes,) in calls[1:] for write in writes]
    assert rerun == [{"name": "b"}, {"name": "a", "size": 1}, {"name": "c"}]
    names = sorted(r["name"] for r in client.get("/v1/mushrooms").json["data"])
    assert names == ["a", "b", "c"]


def test_without_retries_a_conflict_answers_503_at_once(tmp_path, monkeypatch):
    app = kiln.create_app(
        {
            "views": ["tests.resource.sample_resources"],
            "storage": {
                "backend": "sqlite",
                "url": str(tmp_path / "r.sqlite"),
                "transaction_retries": 0,
            },
        },
        configure_logging=False,
    )
    client = app.test_client()
    calls = conflict_on(monkeypatch, app.extensions["kiln"].storage, "apply", 1)
    requests = [{"method": "POST", "path": "/mushrooms", "body": {"data": {"name": "b"}}}]
    assert client.post("/v1/batch", json={"requests": requests}).status_code == 503
    assert len(calls) == 1
    assert client.get("/v1/mushrooms").json["data"] == []
