from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from werkzeug.datastructures import Headers

import kiln

VIEWS = "tests.resource.sample_resources"
PREFIX = "/v1"
BACKENDS = ("memory", "sqlite")
MODES = ("direct", "batch")
#: Response headers that must agree between a request sent alone and inside a batch.
COMPARED_HEADERS = (
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Total-Records",
    "Next-Page",
    "Cache-Control",
    "Vary",
    "Allow",
)
_ABSENT = object()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    rv = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(rv.get(key), dict):
            rv[key] = _merge(rv[key], value)
        else:
            rv[key] = value
    return rv


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def build_app(backend, tmp_path):
    counter = iter(range(1000))

    def build(settings=None):
        url = str(tmp_path / f"k{next(counter)}.sqlite") if backend == "sqlite" else ""
        tree = {"views": [VIEWS], "storage": {"backend": backend, "url": url}}
        return kiln.create_app(_merge(tree, settings or {}), configure_logging=False)

    return build


@pytest.fixture
def app(build_app):
    return build_app()


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Result:
    status: int
    headers: Headers
    body: Any

    @property
    def data(self) -> Any:
        return self.body["data"]


def _decode(status: int, mimetype: str, raw: bytes, method: str) -> Any:
    if method == "HEAD":
        return ""
    if mimetype == "application/json" and raw:
        return orjson.loads(raw)
    return raw.decode("utf-8", "replace")


class Caller:
    """Sends one protocol request either alone or as the only request of a batch.

    ``path`` is given without the version prefix; the batch variant relies on
    the batch adding it.
    """

    def __init__(self, client, mode: str) -> None:
        self.client = client
        self.mode = mode

    def __call__(self, method, path, body=_ABSENT, headers=None) -> Result:
        if self.mode == "batch":
            return self.batched(method, path, body, headers)
        return self.direct(method, path, body, headers)

    def direct(self, method, path, body=_ABSENT, headers=None) -> Result:
        headers = dict(headers or {})
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not _ABSENT:
            kwargs["data"] = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        response = self.client.open(PREFIX + path, method=method, **kwargs)
        return Result(
            response.status_code,
            response.headers,
            _decode(response.status_code, response.mimetype, response.get_data(), method),
        )

    def batched(self, method, path, body=_ABSENT, headers=None) -> Result:
        sub: dict[str, Any] = {"method": method, "path": path}
        if headers:
            sub["headers"] = dict(headers)
        if body is not _ABSENT:
            sub["body"] = body
        response = self.client.post(f"{PREFIX}/batch", json={"requests": [sub]})
        if response.status_code != 200:
            return Result(response.status_code, response.headers, response.get_json())
        (answer,) = response.get_json()["responses"]
        assert answer["path"] == PREFIX + path.split("?")[0]
        return Result(answer["status"], Headers(answer["headers"]), answer["body"])

    def both(self, method, path, body=_ABSENT, headers=None) -> Result:
        """Send alone, then in a batch; both answers must agree (use on reads and errors)."""
        alone = self.direct(method, path, body, headers)
        batched = self.batched(method, path, body, headers)
        assert (batched.status, batched.body) == (alone.status, alone.body)
        for name in COMPARED_HEADERS:
            assert batched.headers.get(name) == alone.headers.get(name), name
        return alone


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def call(client, mode):
    return Caller(client, mode)


@pytest.fixture
def caller(client):
    return Caller(client, "direct")


# -- records and assertions shared by the protocol tests ------------------------


def new_id():
    return str(uuid.uuid4())


def create(caller, path, data):
    rv = caller.direct("POST", path, {"data": data})
    assert rv.status == 201, rv.body
    return rv.data


def assert_error(rv, status, errno):
    assert rv.status == status, rv.body
    assert rv.body["code"] == status
    assert rv.body["errno"] == errno
    assert rv.body["error"]


class mock_any_int:
    def __eq__(self, other):
        return isinstance(other, int) and not isinstance(other, bool)


@pytest.fixture
def mushrooms(caller):
    data = [
        {"name": "amanita", "size": 3, "edible": False, "tags": ["red", "cap"]},
        {"name": "boletus", "size": 10, "edible": True, "tags": ["brown"]},
        {"name": "chanterelle", "size": 5, "edible": True, "author": {"name": "ann"}},
        {
            "name": "Death Cap",
            "size": 7,
            "edible": False,
            "tags": ["cap"],
            "author": {"name": "bo"},
        },
    ]
    return [create(caller, "/mushrooms", item) for item in data]
