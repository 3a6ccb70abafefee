"""The invariants a load run must keep, checked against the server's final state.

:func:`check` runs after the load stopped (nothing writes any more) and
returns a :class:`Report`; a run with any violation or request error fails.

1. **Acknowledged writes.** Every record the server acknowledged is there
   with the last value it acknowledged (data and permissions), and every
   acknowledged delete left it absent (404).
2. **Pagination.** Listing the whole collection page by page (``_limit``,
   ``_token``) returns no record twice, in the order asked for, and the same
   set whatever the sort; the same held for every list made during the run.
3. **Sync.** Each ``_since`` follower's replica, after a last poll, equals
   the server's collection.
4. **Preconditions.** A 412 came back exactly where the ETag sent was stale
   on purpose.
5. **Access.** A shared record is readable by exactly its owner and the users
   it was shared with; private records are listed to their owner only;
   nested records are listed under their parent only.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from loadtests.scenario import (
    Client,
    Expected,
    Follower,
    Journal,
    UnexpectedReply,
    World,
    check_order,
    list_all,
    normalize_permissions,
)

#: A client for one user's credentials (None: the follower's).
ClientFactory = Callable[[tuple[str, str]], Client]
FINAL_SORTS = (("-last_modified",), ("name",))
#: Page size of the final lists, and how many pages they may take (a million records).
PAGE = 100
FINAL_MAX_PAGES = 10_000
#: Records whose access is checked one by one: every shared one, and this many others.
ACCESS_SAMPLE = 300


@dataclass
class Report:
    """What the checker found: violations, and how much it checked."""

    violations: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def count(self, what: str, number: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + number

    def summary(self) -> str:
        counts = ", ".join(f"{number} {what}" for what, number in sorted(self.checked.items()))
        if self.ok:
            return f"invariants: all kept ({counts})"
        lines = [f"invariants: {len(self.violations)} broken ({counts})"]
        lines += [f"  - {violation}" for violation in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more")
        return "\n".join(lines)


def check_conditionals(journal: Journal, report: Report) -> None:
    """412 exactly where the ETag was stale on purpose."""
    for write in journal.conditionals:
        report.count("preconditions")
        if write.stale and write.status != 412:
            report.violations.append(
                f"{write.action}: a stale precondition on {write.uri} "
                f"answered {write.status}, not 412"
            )
        elif not write.stale and write.status == 412:
            report.violations.append(
                f"{write.action}: a fresh precondition on {write.uri} answered 412"
            )


def server_collection(world: World, follower: Client, report: Report) -> dict[str, dict[str, Any]]:
    """The shared collection, listed whole under each final sort; the sets must agree."""
    listings: list[dict[str, dict[str, Any]]] = []
    for sort in FINAL_SORTS:
        url = world.url(world.target.shared, _sort=",".join(sort), _limit=PAGE)
        records = list_all(
            follower, url, "final list", report.violations, max_pages=FINAL_MAX_PAGES
        )
        report.violations.extend(check_order(records, sort, "final list", url))
        listings.append({record["id"]: record for record in records})
        report.count("records listed", len(records))
    first, *others = listings
    for sort, other in zip(FINAL_SORTS[1:], others, strict=True):
        if set(other) != set(first):
            missing = sorted(set(first) ^ set(other))[:5]
            report.violations.append(
                f"final list: sorting by {','.join(sort)} lists other records ({missing}...)"
            )
    return first


def check_acknowledged(
    world: World, records: Iterable[Expected], server: dict[str, dict[str, Any]], follower: Client,
    report: Report,
) -> None:  # fmt: skip
    """Every acknowledged write of the shared collection is there, with its last value."""
    for expected in records:
        report.count("acknowledged records")
        found = server.get(expected.record_id)
        if expected.data is None:
            if found is not None:
                report.violations.append(
                    f"{expected.uri} was deleted (acknowledged), but is listed: {found}"
                )
            url = world.url(expected.uri)
            try:
                follower.request("GET", url, name="final read", expect=(404,))
            except UnexpectedReply as exc:
                report.violations.append(f"{expected.uri} was deleted (acknowledged): {exc}")
        elif found is None:
            report.violations.append(
                f"acknowledged write lost: {expected.uri} is not listed; "
                f"its last acknowledged value was {expected.data}"
            )
        elif found != expected.data:
            report.violations.append(
                f"acknowledged write lost: {expected.uri} is {found}, "
                f"its last acknowledged value was {expected.data}"
            )


def access_sample(records: Iterable[Expected]) -> list[Expected]:
    """The live records to check one by one: all those shared, and a sample of the others."""
    live = [expected for expected in records if expected.data is not None]
    shared = [expected for expected in live if (expected.permissions or {}).get("read")]
    others = [expected for expected in live if not (expected.permissions or {}).get("read")]
    return shared + random.Random(0).sample(others, min(ACCESS_SAMPLE, len(others)))


def check_access(
    world: World, records: Iterable[Expected], clients: ClientFactory, report: Report
) -> None:
    """Owners read their records with the last acknowledged permissions; shares are exact."""
    users = {user.username: user for user in world.users}
    for expected in access_sample(records):
        owner = users[expected.owner]
        url = world.url(expected.uri)
        try:
            reply = clients((owner.username, owner.password)).request(
                "GET", url, name="final read", expect=(200,)
            )
        except UnexpectedReply as exc:
            report.violations.append(f"{expected.uri}: its owner cannot read it: {exc}")
            continue
        report.count("permissions")
        permissions = normalize_permissions(reply.body.get("permissions"))
        if permissions != expected.permissions:
            report.violations.append(
                f"{expected.uri}: permissions are {permissions}, "
                f"the last acknowledged were {expected.permissions}"
            )
        granted = set((expected.permissions or {}).get("read", []))
        granted |= set((expected.permissions or {}).get("write", []))
        grantees = [user for user in world.users if user.principal in granted and user is not owner]
        outsiders = [user for user in world.users if user.principal not in granted]
        for user, status in [(user, 200) for user in grantees] + [
            (user, 403) for user in outsiders[:1]
        ]:
            report.count("access checks")
            try:
                clients((user.username, user.password)).request(
                    "GET", url, name="final read", expect=(status,)
                )
            except UnexpectedReply as exc:
                report.violations.append(f"{expected.uri}: as {user.username}: {exc}")


def check_owned_collections(
    world: World, records: Iterable[Expected], clients: ClientFactory, report: Report
) -> None:
    """Private and nested collections list exactly their owner's acknowledged records."""
    groups: dict[tuple[str, str], list[Expected]] = {}
    for expected in records:
        groups.setdefault((expected.owner, expected.collection), []).append(expected)
    users = {user.username: user for user in world.users}
    shared = world.journal.records
    for (owner, collection), group in sorted(groups.items()):
        parent = collection.rsplit("/", 1)[0]
        parent_record = shared.get(("", parent)) if parent else None
        # Children of a deleted parent are unreachable (no cascade); of an
        # uncertain one, maybe more than we know of.
        if parent_record is not None and (parent_record.data is None or parent_record.uncertain):
            continue
        if any(expected.uncertain for expected in group):
            continue
        user = users[owner]
        client = clients((user.username, user.password))
        url = world.url(collection, _limit=PAGE)
        try:
            listed = {r["id"]: r for r in list_all(client, url, "final list", report.violations)}
        except UnexpectedReply as exc:
            report.violations.append(f"{collection} as {owner}: {exc}")
            continue
        expected_records = {e.record_id: e.data for e in group if e.data is not None}
        report.count("owned collections")
        if listed != expected_records:
            report.violations.append(
                f"{collection} as {owner}: lists {sorted(listed)}, "
                f"expected exactly {sorted(expected_records)} (acknowledged)"
            )


def check_followers(
    followers: Iterable[Follower], server: dict[str, dict[str, Any]], report: Report
) -> None:
    """After a last poll, every follower's replica equals the server's collection."""
    for number, follower in enumerate(followers):
        try:
            follower.poll(name="final sync")
        except UnexpectedReply as exc:
            report.violations.append(f"follower {number}: {exc}")
            continue
        report.count("followers")
        if follower.replica != server:
            missing = sorted(set(server) - set(follower.replica))
            extra = sorted(set(follower.replica) - set(server))
            differ = sorted(
                key
                for key in set(server) & set(follower.replica)
                if server[key] != follower.replica[key]
            )
            report.violations.append(
                f"follower {number}: its replica differs from the server's collection: "
                f"missing {missing[:5]}, extra {extra[:5]}, different {differ[:5]}"
            )


def check(world: World, clients: ClientFactory) -> Report:
    """Check every invariant of a finished run; never raises for what the server answers.

    ``clients`` makes a client for a user's credentials; one is made per user.
    """
    clients = functools.cache(clients)
    report = Report(violations=list(world.journal.violations))
    journal = world.journal
    check_conditionals(journal, report)
    follower = clients(world.target.follower)
    try:
        server = server_collection(world, follower, report)
    except UnexpectedReply as exc:
        report.violations.append(f"the shared collection cannot be listed: {exc}")
        return report
    certain = [expected for expected in journal.records.values() if not expected.uncertain]
    shared = [expected for expected in certain if expected.collection == world.target.shared]
    check_acknowledged(world, shared, server, follower, report)
    check_access(world, shared, clients, report)
    owned = [
        expected
        for expected in journal.records.values()
        if expected.collection != world.target.shared
    ]
    check_owned_collections(world, owned, clients, report)
    check_followers((user.follower for user in world.users), server, report)
    return report
