"""The load scenario: virtual users, their actions, and the journal of what the server acknowledged.

Nothing here imports locust: the actions talk to a :class:`Client`, which
``locustfile.py`` implements on locust's HTTP session (so every request is
counted in locust's statistics) and :class:`HTTPClient` on a plain
``requests`` session (for the invariant checker and the tests).

Every record is written by one virtual user only, its owner. So the owner
always knows the record's current ETag, the last value the server
acknowledged, and whether an ``If-Match`` it sends is fresh (must succeed) or
stale on purpose (must be a 412). Other users only read it, when its owner
shares it with them.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests

KINDS = ("agaric", "bolete", "chanterelle", "morel", "puffball")
#: Names the scenario gives its records: only these are checked for order,
#: so records another tool left in the collection cannot trip the checker.
NAME_PATTERN = re.compile(r"^[a-z]+-[0-9a-f]{12}$")
#: Sorts used while others write: on fields that never change (``name`` and
#: ``kind`` are read-only), or newest first, so a record cannot move behind
#: the pagination cursor and be listed twice.
SORTS = (("name",), ("-last_modified",), ("kind", "name"), ("id",), ("-name",))
PAGE_LIMIT_MAX = 10
MAX_PAGES = 500
JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """What the server answered: status, headers and the decoded JSON body (or None)."""

    status: int
    headers: Mapping[str, str]
    body: Any


class UnexpectedReply(Exception):
    """The server answered what the scenario did not expect (the client has reported it).

    ``reply`` is what came back, or None when no answer came (a network error).
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Client(Protocol):
    """Sends one request as one user.

    Raises :class:`UnexpectedReply` unless the status is one of ``expect``.
    """

    def request(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: Collection[int],
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply: ...


def describe(method: str, path: str, status: int, body: Any) -> str:
    """One line naming a request and what came back."""
    text = json.dumps(body)[:300] if body is not None else ""
    return f"{method} {path} answered {status} {text}".rstrip()


def encode(body: Any, headers: Mapping[str, str] | None) -> tuple[bytes | None, dict[str, str]]:
    """The body as JSON bytes, and the headers with a JSON ``Content-Type`` unless given."""
    sent = dict(headers or {})
    if body is None:
        return None, sent
    sent.setdefault("Content-Type", JSON)
    return json.dumps(body).encode(), sent


def decode(content: bytes) -> Any:
    """A response body decoded as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


class HTTPClient:
    """A :class:`Client` on a ``requests`` session, counting nothing."""

    def __init__(
        self, base_url: str, auth: tuple[str, str] | None, *, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: Collection[int],
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data, sent = encode(body, headers)
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                data=data,
                headers=sent,
                auth=self.auth,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise UnexpectedReply(f"{name}: {method} {path} failed: {exc}") from exc
        reply = Reply(response.status_code, response.headers, decode(response.content))
        if reply.status not in expect:
            message = f"{name}: {describe(method, path, reply.status, reply.body)}"
            raise UnexpectedReply(message, reply)
        return reply


def etag_value(headers: Mapping[str, str]) -> int:
    """The timestamp of an ``ETag: "<ts>"`` header."""
    return int(headers["ETag"].strip('"'))


def relative(url: str) -> str:
    """The path and query of a ``Next-Page`` URL: requests never leave the server under test."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def normalize_permissions(permissions: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Permissions as sorted lists, without empty ones (servers differ on showing them)."""
    return {key: sorted(value) for key, value in (permissions or {}).items() if value}


# --- the journal -------------------------------------------------------------------


@dataclass
class Expected:
    """What the server last acknowledged for one record, as its owner saw it."""

    owner: str
    collection: str
    record_id: str
    data: dict[str, Any] | None  # None: deleted
    last_modified: int
    permissions: dict[str, list[str]] | None = None
    uncertain: bool = False  # a write of unknown outcome: not checked exactly
    etags: list[int] = field(default_factory=list)  # earlier ETags: stale on purpose

    @property
    def uri(self) -> str:
        return f"{self.collection}/{self.record_id}"


@dataclass(frozen=True)
class Conditional:
    """One write sent with ``If-Match`` (or ``If-None-Match: *``) and what came back."""

    action: str
    uri: str
    stale: bool
    status: int


class Journal:
    """Every write the server acknowledged, and what the scenario saw go wrong while running."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Expected] = {}
        self.conditionals: list[Conditional] = []
        self.violations: list[str] = []
        self.acknowledged = 0

    @staticmethod
    def key(owner: str, collection: str, record_id: str, *, private: bool) -> tuple[str, str]:
        """Private records are keyed by owner too: two users may hold the same id."""
        return (owner if private else "", f"{collection}/{record_id}")

    def acknowledge(
        self, owner: str, collection: str, reply_body: Mapping[str, Any], *, private: bool = False
    ) -> Expected:
        """Remember a record the server returned after a successful write."""
        record = dict(reply_body["data"])
        key = self.key(owner, collection, record["id"], private=private)
        expected = self.records.get(key)
        permissions = reply_body.get("permissions")
        if expected is None:
            expected = Expected(owner, collection, record["id"], None, 0)
            self.records[key] = expected
        if expected.last_modified and expected.last_modified != record["last_modified"]:
            expected.etags.append(expected.last_modified)
        expected.data = None if record.get("deleted") else record
        expected.last_modified = record["last_modified"]
        if permissions is not None:
            expected.permissions = normalize_permissions(permissions)
        self.acknowledged += 1
        return expected

    def conditional(self, action: str, uri: str, *, stale: bool, status: int) -> None:
        self.conditionals.append(Conditional(action, uri, stale, status))

    def violation(self, message: str) -> None:
        self.violations.append(message)

    @contextmanager
    def writing(self, *records: Expected) -> Iterator[None]:
        """Writes whose outcome is unknown if they raise: their records are not checked exactly."""
        try:
            yield
        except BaseException:
            for expected in records:
                expected.uncertain = True
            raise


# --- the world shared by the virtual users ---------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the scenario's collections live on the server under test.

    An empty ``private`` or ``nested`` path turns off the actions on it (Kinto
    has neither); ``nested`` holds ``{parent}``, the id of a record of ``shared``.
    """

    prefix: str = "/v1"
    shared: str = "/psilos"
    private: str = "/notes"
    nested: str = "/psilos/{parent}/sightings"
    unique_conflicts: bool = True
    follower: tuple[str, str] = ("follower", "follower-password")


@dataclass
class World:
    """What the virtual users of one run share: the target, the journal, who is who."""

    target: Target = field(default_factory=Target)
    journal: Journal = field(default_factory=Journal)
    users: list[VirtualUser] = field(default_factory=list)
    seed_records: int = 5

    def url(self, path: str, **params: Any) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.target.prefix}{path}{query}"


class Follower:
    """A ``_since`` sync client: keeps a replica of the shared collection up to date."""

    def __init__(self, world: World, client: Client) -> None:
        self.world = world
        self.client = client
        self.since = 0
        self.replica: dict[str, dict[str, Any]] = {}

    def poll(self, *, name: str = "sync") -> int:
        """Fetch the changes since the last poll, every page; return how many were applied."""
        headers = {"If-None-Match": f'"{self.since}"'} if self.since else {}
        url = self.world.url(
            self.world.target.shared, _since=self.since, _sort="-last_modified", _limit=50
        )
        reply = self.client.request("GET", url, name=name, expect=(200, 304), headers=headers)
        if reply.status == 304:
            return 0
        # The ETag of the first page: whatever commits later has a greater timestamp
        # and comes in the next poll, even if it lands on a page we read now.
        since = etag_value(reply.headers)
        applied = 0
        for _ in range(MAX_PAGES):
            for record in reply.body["data"]:
                applied += 1
                if record.get("deleted"):
                    self.replica.pop(record["id"], None)
                else:
                    self.replica[record["id"]] = record
            next_page = reply.headers.get("Next-Page")
            if not next_page:
                break
            reply = self.client.request("GET", relative(next_page), name=name, expect=(200,))
        self.since = since
        return applied


# --- virtual users and their actions ---------------------------------------------

Action = Callable[["VirtualUser"], None]
#: name -> (weight, what it needs: "" always, "private", "nested", "unique")
ACTIONS: dict[str, tuple[int, str, Action]] = {}


def action(weight: int, needs: str = "") -> Callable[[Action], Action]:
    def register(function: Action) -> Action:
        ACTIONS[function.__name__] = (weight, needs, function)
        return function

    return register


def on_a_record(function: Callable[[VirtualUser, Expected], None]) -> Action:
    """An action on one of my shared records; with none (or none known), a create instead."""

    @functools.wraps(function)
    def run(user: VirtualUser) -> None:
        expected = user.pick(user.world.target.shared)
        if expected is None:
            return create(user)
        return function(user, expected)

    return run


def available_actions(target: Target) -> list[str]:
    """The actions that apply to ``target``, in declaration order."""
    enabled = {
        "": True,
        "private": bool(target.private),
        "nested": bool(target.nested),
        "unique": target.unique_conflicts,
    }
    return [name for name, (_, needs, _) in ACTIONS.items() if enabled[needs]]


class Picker:
    """Which action comes next: every available one once (shuffled), then by weight.

    ``focus`` (``LOAD_ACTION``) runs that action only.
    """

    def __init__(self, names: list[str], rng: random.Random, focus: str = "") -> None:
        if focus:
            if focus not in names:
                raise ValueError(
                    f"LOAD_ACTION {focus!r} is not an action of this target; "
                    f"choose one of: {', '.join(names)}."
                )
            names = [focus]
        self.names = names
        self.weights = [ACTIONS[name][0] for name in names]
        self.first = rng.sample(names, len(names))
        self.rng = rng

    def next(self) -> str:
        if self.first:
            return self.first.pop()
        return self.rng.choices(self.names, self.weights)[0]


def new_psilo(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(KINDS)
    return {
        "name": f"{kind}-{uuid.uuid4().hex[:12]}",
        "kind": kind,
        "size": rng.randint(0, 100),
        "edible": rng.random() < 0.5,
        "tags": sorted(rng.sample(["red", "white", "ring", "gills", "pores"], rng.randint(0, 3))),
    }


class VirtualUser:
    """One simulated user: its identity, its records, its follower."""

    def __init__(
        self,
        world: World,
        client: Client,
        follower_client: Client,
        username: str,
        password: str,
        rng: random.Random,
        focus: str = "",
    ) -> None:
        self.world = world
        self.client = client
        self.username = username
        self.password = password
        self.rng = rng
        self.principal = ""
        self.follower = Follower(world, follower_client)
        self.picker = Picker(available_actions(world.target), rng, focus)

    # -- helpers -------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        return self.world.journal

    def mine(self, collection: str) -> list[Expected]:
        """My records of ``collection`` that exist and whose state I know."""
        return [
            expected
            for expected in self.journal.records.values()
            if expected.owner == self.username
            and expected.collection == collection
            and expected.data is not None
            and not expected.uncertain
        ]

    def pick(self, collection: str) -> Expected | None:
        records = self.mine(collection)
        return self.rng.choice(records) if records else None

    def others(self) -> list[VirtualUser]:
        return [user for user in self.world.users if user is not self and user.principal]

    def request(
        self, method: str, url: str, name: str, expect: Collection[int], **kw: Any
    ) -> Reply:
        return self.client.request(method, url, name=name, expect=expect, **kw)

    def if_match(self, expected: Expected) -> dict[str, str]:
        return {"If-Match": f'"{expected.last_modified}"'}

    def conditional(
        self,
        name: str,
        method: str,
        expected: Expected,
        *,
        stale: bool,
        expect: Collection[int],
        headers: Mapping[str, str],
        body: Any = None,
        url: str = "",
    ) -> Reply:
        """A request with a precondition on one of my records, logged for the 412 invariant."""
        try:
            with self.journal.writing(expected):
                reply = self.request(
                    method, url or self.world.url(expected.uri), name, expect,
                    body=body, headers=headers,
                )  # fmt: skip
        except UnexpectedReply as exc:
            if exc.reply is not None:
                self.journal.conditional(name, expected.uri, stale=stale, status=exc.reply.status)
            raise
        self.journal.conditional(name, expected.uri, stale=stale, status=reply.status)
        return reply

    def write(
        self,
        name: str,
        method: str,
        expected: Expected,
        body: Any,
        *,
        content_type: str = JSON,
        conditional: bool = True,
    ) -> Expected:
        """A write on one of my records, with a fresh ``If-Match`` unless not ``conditional``."""
        headers = {"Content-Type": content_type}
        if conditional:
            headers.update(self.if_match(expected))
            reply = self.conditional(
                name, method, expected, stale=False, expect=(200,), headers=headers, body=body
            )
        else:
            with self.journal.writing(expected):
                url = self.world.url(expected.uri)
                reply = self.request(method, url, name, (200,), body=body, headers=headers)
        private = expected.collection == self.world.target.private
        return self.journal.acknowledge(
            self.username, expected.collection, reply.body, private=private
        )

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Learn my principal, join the world, and fill the collection a little."""
        reply = self.request("GET", f"{self.world.target.prefix}/", "hello", (200,))
        self.principal = reply.body["user"]["id"]
        self.world.users.append(self)
        if self.world.seed_records:
            self.create_many(self.world.seed_records, name="seed")

    def hit(self) -> str:
        """Run the next action; return its name."""
        name = self.picker.next()
        ACTIONS[name][2](self)
        return name

    def create_many(self, count: int, *, name: str) -> None:
        shared = self.world.target.shared
        body = {
            "defaults": {"method": "POST", "path": self.world.url(shared)},
            "requests": [{"body": {"data": new_psilo(self.rng)}} for _ in range(count)],
        }
        reply = self.request("POST", f"{self.world.target.prefix}/batch", name, (200,), body=body)
        for response in reply.body["responses"]:
            if response["status"] != 201:
                raise UnexpectedReply(f"{name}: a batch create answered {response['status']}")
            self.journal.acknowledge(self.username, shared, response["body"])

    def confirm(self, name: str, after: Expected, sent: Mapping[str, Any]) -> None:
        """The record the server acknowledged holds the values sent (None: removed)."""
        if after.data is None or any(after.data.get(key) != value for key, value in sent.items()):
            self.journal.violation(f"{name}: {after.uri} answered {after.data} to {dict(sent)}")

    def check_record(self, expected: Expected, reply: Reply, name: str) -> None:
        """Read-your-writes: what the server sends is what it last acknowledged."""
        if reply.body["data"] != expected.data:
            self.journal.violation(
                f"{name}: {expected.uri} read as {reply.body['data']}, "
                f"but the last acknowledged write was {expected.data}"
            )


# --- the actions ------------------------------------------------------------------


@action(20)
def create(user: VirtualUser) -> None:
    """POST a record, sometimes shared with another user; expects 201."""
    shared = user.world.target.shared
    body: dict[str, Any] = {"data": new_psilo(user.rng)}
    others = user.others()
    if others and user.rng.random() < 0.3:
        body["permissions"] = {"read": [user.rng.choice(others).principal]}
    reply = user.request("POST", user.world.url(shared), "create", (201,), body=body)
    user.journal.acknowledge(user.username, shared, reply.body)


@action(20)
def create_put(user: VirtualUser) -> None:
    """PUT a new id with ``If-None-Match: *``; expects 201."""
    shared = user.world.target.shared
    record_id = str(uuid.uuid4())
    user.journal.records[user.journal.key(user.username, shared, record_id, private=False)] = (
        placeholder := Expected(user.username, shared, record_id, None, 0, uncertain=True)
    )
    body = {"data": new_psilo(user.rng)}
    headers = {"If-None-Match": "*"}
    reply = user.conditional(
        "create_put", "PUT", placeholder, stale=False, expect=(201,), headers=headers, body=body
    )
    placeholder.uncertain = False
    user.journal.acknowledge(user.username, shared, reply.body)


@action(50)
def batch_create(user: VirtualUser) -> None:
    """One ``/batch`` of 10 to 25 POSTs; every sub-response must be 201."""
    user.create_many(user.rng.randint(10, 25), name="batch_create")


@action(60)
@on_a_record
def read(user: VirtualUser, expected: Expected) -> None:
    """GET one of my records: its last acknowledged value; 304 with its ETag."""
    url = user.world.url(expected.uri)
    if user.rng.random() < 0.3:
        user.request(
            "GET", url, "read", (304,), headers={"If-None-Match": f'"{expected.last_modified}"'}
        )
        return
    reply = user.request("GET", url, "read", (200,))
    user.check_record(expected, reply, "read")
    if normalize_permissions(reply.body.get("permissions")) != expected.permissions:
        user.journal.violation(
            f"read: {expected.uri} has permissions {reply.body.get('permissions')}, "
            f"the last acknowledged were {expected.permissions}"
        )


FILTERS: tuple[
    tuple[str, Callable[[random.Random], tuple[dict[str, str], Callable[[dict[str, Any]], bool]]]],
    ...,
]


def _filter_kind(rng: random.Random) -> tuple[dict[str, str], Callable[[dict[str, Any]], bool]]:
    kind = rng.choice(KINDS)
    return {"kind": kind}, lambda record: record.get("kind") == kind


def _filter_in_kind(rng: random.Random) -> tuple[dict[str, str], Callable[[dict[str, Any]], bool]]:
    kinds = rng.sample(KINDS, 2)
    return {"in_kind": ",".join(kinds)}, lambda record: record.get("kind") in kinds


def _filter_min_size(rng: random.Random) -> tuple[dict[str, str], Callable[[dict[str, Any]], bool]]:
    size = rng.randint(0, 100)
    return {"min_size": str(size)}, lambda record: record.get("size", -1) >= size


def _filter_edible(rng: random.Random) -> tuple[dict[str, str], Callable[[dict[str, Any]], bool]]:
    edible = rng.random() < 0.5
    return {"edible": json.dumps(edible)}, lambda record: record.get("edible") is edible


def _filter_none(rng: random.Random) -> tuple[dict[str, str], Callable[[dict[str, Any]], bool]]:
    return {}, lambda record: True


FILTERS = (
    ("kind", _filter_kind),
    ("in_kind", _filter_in_kind),
    ("min_size", _filter_min_size),
    ("edible", _filter_edible),
    ("none", _filter_none),
)


def sort_key(record: Mapping[str, Any], sort: tuple[str, ...]) -> tuple[Any, ...]:
    """A key ordering records as ``_sort=<sort>`` does (fields present, same types)."""
    key: list[Any] = []
    for field_name in (*sort, "-last_modified", "id"):
        descending = field_name.startswith("-")
        value = record[field_name.lstrip("-")]
        if descending:
            value = -value if isinstance(value, int) else (*(-ord(c) for c in value), 1)
        key.append(value)
    return tuple(key)


def list_all(
    client: Client, url: str, name: str, violations: list[str], *, max_pages: int = 0
) -> list[dict[str, Any]]:
    """Follow ``Next-Page`` to the end (or ``max_pages``); report records listed twice."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    reply = client.request("GET", url, name=name, expect=(200,))
    max_pages = max_pages or MAX_PAGES
    for _ in range(max_pages):
        for record in reply.body["data"]:
            if record["id"] in seen:
                violations.append(f"{name}: {record['id']} listed twice following {url}")
            seen.add(record["id"])
            records.append(record)
        next_page = reply.headers.get("Next-Page")
        if not next_page:
            return records
        reply = client.request("GET", relative(next_page), name=name, expect=(200,))
    violations.append(f"{name}: more than {max_pages} pages following {url}: a pagination loop?")
    return records


def check_order(
    records: list[dict[str, Any]], sort: tuple[str, ...], name: str, url: str
) -> list[str]:
    """The scenario's records in ``records`` come in the order ``sort`` asks for."""
    ours = [record for record in records if NAME_PATTERN.match(str(record.get("name", "")))]
    return [
        f"{name}: {after['id']} listed after {before['id']} against _sort={','.join(sort)} ({url})"
        for before, after in itertools.pairwise(ours)
        if sort_key(after, sort) < sort_key(before, sort)
    ]


@action(80)
def list_pages(user: VirtualUser) -> None:
    """List with a filter, a sort and a small ``_limit``, following every ``_token`` page.

    No record twice, the order asked for, only matching records, and every one
    of my matching records (which nobody else writes) exactly once.
    """
    shared = user.world.target.shared
    _, make_filter = user.rng.choice(FILTERS)
    params, matches = make_filter(user.rng)
    sort = user.rng.choice(SORTS)
    limit = user.rng.randint(2, PAGE_LIMIT_MAX)
    url = user.world.url(shared, **params, _sort=",".join(sort), _limit=limit)
    mine = {expected.record_id for expected in user.mine(shared) if matches(expected.data or {})}
    records = list_all(user.client, url, "list_pages", user.journal.violations)
    for message in check_order(records, sort, "list_pages", url):
        user.journal.violation(message)
    listed = set()
    for record in records:
        listed.add(record["id"])
        if not matches(record):
            user.journal.violation(f"list_pages: {record} does not match the filter of {url}")
    for record_id in sorted(mine - listed):
        user.journal.violation(f"list_pages: my record {record_id} is missing from {url}")


@action(30)
def count(user: VirtualUser) -> None:
    """HEAD with a filter: ``Total-Records`` counts at least my matching records."""
    shared = user.world.target.shared
    _, make_filter = user.rng.choice(FILTERS)
    params, matches = make_filter(user.rng)
    url = user.world.url(shared, **params)
    mine = [expected for expected in user.mine(shared) if matches(expected.data or {})]
    reply = user.request("HEAD", url, "count", (200,))
    # Kinto 12 renamed the header Total-Objects.
    total = int(reply.headers.get("Total-Records") or reply.headers.get("Total-Objects") or -1)
    if total < len(mine):
        user.journal.violation(f"count: {url} counted {total} records, I alone have {len(mine)}")


@action(50)
@on_a_record
def update(user: VirtualUser, expected: Expected) -> None:
    """PATCH (``application/json``) with a fresh ``If-Match``; expects 200."""
    changes = {"size": user.rng.randint(0, 100), "edible": user.rng.random() < 0.5}
    user.confirm("update", user.write("update", "PATCH", expected, {"data": changes}), changes)


@action(30)
@on_a_record
def replace(user: VirtualUser, expected: Expected) -> None:
    """PUT a whole record over one of mine with a fresh ``If-Match``; keeps its shares."""
    assert expected.data is not None
    data = new_psilo(user.rng)
    data["name"], data["kind"] = expected.data["name"], expected.data["kind"]
    body = {"data": data, "permissions": {"read": (expected.permissions or {}).get("read", [])}}
    user.confirm("replace", user.write("replace", "PUT", expected, body), data)


@action(30)
@on_a_record
def json_patch(user: VirtualUser, expected: Expected) -> None:
    """PATCH with ``application/json-patch+json`` operations on ``/data``."""
    size = user.rng.randint(0, 100)
    tags = sorted(user.rng.sample(["red", "white", "ring", "gills", "pores"], 2))
    operations = [
        {"op": "replace", "path": "/data/size", "value": size},
        {"op": "add", "path": "/data/tags", "value": tags},
    ]
    after = user.write(
        "json_patch", "PATCH", expected, operations, content_type="application/json-patch+json"
    )
    user.confirm("json_patch", after, {"size": size, "tags": tags})


@action(30)
@on_a_record
def merge_patch(user: VirtualUser, expected: Expected) -> None:
    """PATCH with ``application/merge-patch+json``: sets or removes (``null``) ``notes``."""
    notes = None if user.rng.random() < 0.5 else f"seen {user.rng.randint(1, 9)} times"
    after = user.write(
        "merge_patch",
        "PATCH",
        expected,
        {"data": {"notes": notes}},
        content_type="application/merge-patch+json",
    )
    user.confirm("merge_patch", after, {"notes": notes})


@action(10)
@on_a_record
def delete(user: VirtualUser, expected: Expected) -> None:
    """DELETE one of my records, with a fresh ``If-Match`` half the time; expects 200."""
    after = user.write("delete", "DELETE", expected, None, conditional=user.rng.random() < 0.5)
    if after.data is not None:
        user.journal.violation(f"delete: {expected.uri} answered no tombstone")


@action(20)
def batch_update(user: VirtualUser) -> None:
    """One ``/batch`` of PATCHes on up to 5 of my records, each with a fresh ``If-Match``."""
    shared = user.world.target.shared
    records = user.mine(shared)
    chosen = user.rng.sample(records, min(5, len(records)))
    if not chosen:
        return create(user)
    requests_ = [
        {
            "method": "PATCH",
            "path": user.world.url(expected.uri),
            "headers": user.if_match(expected),
            "body": {"data": {"size": user.rng.randint(0, 100)}},
        }
        for expected in chosen
    ]
    body = {"requests": requests_}
    batch_url = f"{user.world.target.prefix}/batch"
    with user.journal.writing(*chosen):
        reply = user.request("POST", batch_url, "batch_update", (200,), body=body)
    for expected, response in zip(chosen, reply.body["responses"], strict=True):
        status = response["status"]
        user.journal.conditional("batch_update", expected.uri, stale=False, status=status)
        if status != 200:
            expected.uncertain = True
            if status != 412:  # a 412 is reported by the conditional-writes invariant
                user.journal.violation(f"batch_update: {expected.uri} answered {status}")
            continue
        user.journal.acknowledge(user.username, shared, response["body"])
    return None


@action(90)
def sync(user: VirtualUser) -> None:
    """Poll ``_since`` the last ETag (``If-None-Match``: 304 when nothing changed)."""
    user.follower.poll()


@action(30)
def share(user: VirtualUser) -> None:
    """Change who may read one of my records (PATCH ``permissions``, or JSON-Patch on them)."""
    expected = user.pick(user.world.target.shared)
    others = user.others()
    if expected is None or not others:
        return create(user)
    readers = sorted({user.rng.choice(others).principal for _ in range(user.rng.randint(0, 2))})
    if user.rng.random() < 0.5:
        after = user.write("share", "PATCH", expected, {"permissions": {"read": readers}})
    else:
        operations: list[dict[str, Any]] = [
            {"op": "replace", "path": "/permissions/read", "value": readers}
        ]
        after = user.write(
            "share", "PATCH", expected, operations, content_type="application/json-patch+json"
        )
    if (after.permissions or {}).get("read", []) != readers:
        user.journal.violation(
            f"share: {expected.uri} answered {after.permissions}, sent {readers}"
        )
    return None


@action(30)
@on_a_record
def conflict(user: VirtualUser, expected: Expected) -> None:
    """Conflicts on purpose: a stale ``If-Match`` (412), ``If-None-Match: *`` on an
    existing id (412) or, with unique fields, a duplicated name (409)."""
    shared = user.world.target.shared
    assert expected.data is not None
    choice = user.rng.random()
    if choice < 0.5:
        stale = expected.etags[-1] if expected.etags else expected.last_modified - 1
        reply = user.conditional(
            "conflict", "PATCH", expected, stale=True, expect=(412,),
            body={"data": {"size": 1}}, headers={"If-Match": f'"{stale}"'},
        )  # fmt: skip
        existing = (reply.body.get("details") or {}).get("existing") or {}
        if existing.get("last_modified") != expected.last_modified:
            user.journal.violation(
                f"conflict: the 412 on {expected.uri} shows {existing}, not its current version"
            )
    elif choice < 0.8 or not user.world.target.unique_conflicts:
        user.conditional(
            "conflict", "PUT", expected, stale=True, expect=(412,),
            body={"data": new_psilo(user.rng)}, headers={"If-None-Match": "*"},
        )  # fmt: skip
    else:
        data = new_psilo(user.rng)
        data["name"] = expected.data["name"]
        new_url = user.world.url(f"{shared}/{uuid.uuid4()}")
        user.request("PUT", new_url, "conflict", (409,), body={"data": data})


@action(30, "private")
def private(user: VirtualUser) -> None:
    """My private notes: create, update or delete one; another user's id is a 404 to me."""
    collection = user.world.target.private
    notes = user.mine(collection)
    choice = user.rng.random()
    if not notes or choice < 0.4:
        body = {"data": {"text": f"note {uuid.uuid4().hex[:8]}", "done": False}}
        reply = user.request("POST", user.world.url(collection), "private", (201,), body=body)
        user.journal.acknowledge(user.username, collection, reply.body, private=True)
    elif choice < 0.7:
        user.write("private", "PATCH", user.rng.choice(notes), {"data": {"done": True}})
    elif choice < 0.85:
        user.write("private", "DELETE", user.rng.choice(notes), None)
    else:
        theirs = [
            expected
            for expected in user.journal.records.values()
            if expected.collection == collection and expected.owner != user.username
        ]
        if theirs:
            url = user.world.url(user.rng.choice(theirs).uri)
            user.request("GET", url, "private", (404,))


@action(30, "nested")
def nested(user: VirtualUser) -> None:
    """Sightings under one of my records: create one, then list them all (exactly mine)."""
    parent = user.pick(user.world.target.shared)
    if parent is None:
        return create(user)
    collection = user.world.target.nested.format(parent=parent.record_id)
    body = {"data": {"place": user.rng.choice(["wood", "meadow", "dune"]), "count": 1}}
    with user.journal.writing(parent):
        reply = user.request("POST", user.world.url(collection), "nested", (201,), body=body)
    user.journal.acknowledge(user.username, collection, reply.body)
    expected = {record.record_id: record.data for record in user.mine(collection)}
    violations = user.journal.violations
    listed = list_all(user.client, user.world.url(collection, _limit=5), "nested", violations)
    if {record["id"]: record for record in listed} != expected:
        violations.append(f"nested: {collection} lists {listed}, expected {expected}")
    return None
