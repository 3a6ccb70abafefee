"""locust's entry point: runs :mod:`loadtests.scenario`'s virtual users, then checks the invariants.

    locust -f loadtests/locustfile.py --config loadtests/test.conf --host http://127.0.0.1:8888

Every option below can be set in the config file (``hits = 200``) or on the
command line (``--hits 200``); ``LOAD_ACTION`` in the environment sets
``--load-action``. The process exits non-zero on any request error and on any
broken invariant (``loadtests/invariants.py``).

This module is glue run only inside locust's gevent process; its logic lives in
``scenario.py`` and ``invariants.py`` (covered in-process by tests/test_loadtests.py)
and the tests run it end to end through ``python -m loadtests.run``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, constant, events, task
from locust.clients import HttpSession
from locust.env import Environment
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import loadtests` from anywhere

from loadtests import invariants
from loadtests.scenario import (
    HTTPClient,
    Reply,
    Target,
    UnexpectedReply,
    VirtualUser,
    World,
    available_actions,
    decode,
    describe,
    encode,
)

logger = logging.getLogger("loadtests")


class LocustClient:
    """A scenario client on locust's session: every request lands in locust's statistics."""

    def __init__(self, session: HttpSession, auth: tuple[str, str]) -> None:
        self.session = session
        self.auth = auth

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
        with self.session.request(
            method, path, name=name, data=data, headers=sent, auth=self.auth,
            catch_response=True, allow_redirects=False,
        ) as response:  # fmt: skip
            reply = Reply(response.status_code, response.headers, decode(response.content or b""))
            if reply.status in expect:
                response.success()
                return reply
            message = describe(method, path, reply.status, reply.body)
            response.failure(message)
        raise UnexpectedReply(f"{name}: {message}", reply if reply.status else None)


class Run:
    """The state of this locust process's run: the world, the hits left, the actions done."""

    world = World()
    hits_left = 0  # 0: unlimited (--run-time decides)
    limited = False
    stopping = False
    done: Counter[str] = Counter()


def flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def add_options(parser: Any) -> None:
    parser.add_argument(
        "--load-action", default=os.environ.get("LOAD_ACTION", ""),
        help="Run only this action (env LOAD_ACTION); default: all, weighted.",
    )  # fmt: skip
    parser.add_argument(
        "--hits", type=int, default=0,
        help="Stop after this many actions in all (0: only --run-time stops).",
    )  # fmt: skip
    parser.add_argument(
        "--seed-records", type=int, default=5, help="Records each user creates first."
    )
    parser.add_argument("--prefix", default="/v1", help="The API's version prefix.")
    parser.add_argument("--shared-path", default="/psilos", help="The shared collection.")
    parser.add_argument("--private-path", default="/notes", help="The private collection ('' off).")
    parser.add_argument(
        "--nested-path", default="/psilos/{parent}/sightings",
        help="The nested collection, {parent} a shared record's id ('' off).",
    )  # fmt: skip
    parser.add_argument(
        "--unique-conflicts", default="true",
        help="Whether names are unique (409 conflicts on purpose).",
    )  # fmt: skip
    parser.add_argument(
        "--follower", default="follower:follower-password",
        help="user:password of the _since follower, who may read the whole shared collection.",
    )  # fmt: skip


def start(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None
    user, _, password = options.follower.partition(":")
    target = Target(
        prefix=options.prefix,
        shared=options.shared_path,
        private=options.private_path,
        nested=options.nested_path,
        unique_conflicts=flag(options.unique_conflicts),
        follower=(user, password),
    )
    Run.world = World(target=target, seed_records=options.seed_records)
    Run.hits_left = options.hits
    Run.limited = options.hits > 0
    Run.stopping = False
    Run.done = Counter()
    names = available_actions(target)
    if options.load_action and options.load_action not in names:
        logger.error(
            "LOAD_ACTION %r is not an action of this target; choose one of: %s.",
            options.load_action, ", ".join(names),
        )  # fmt: skip
        environment.process_exit_code = 2
        gevent.spawn(environment.runner.quit)  # type: ignore[union-attr]


def check(environment: Environment, **_: Any) -> None:
    world = Run.world
    actions = ", ".join(f"{name} {number}" for name, number in sorted(Run.done.items()))
    writes = f"{world.journal.acknowledged} acknowledged writes by {len(world.users)} users"
    print(f"load: {sum(Run.done.values())} actions ({actions}); {writes}")
    host = environment.host or ""
    report = invariants.check(world, lambda auth: HTTPClient(host, auth))
    print(report.summary())
    if not report.ok:
        environment.process_exit_code = 1


# locust's EventHook.add_listener carries no annotations.
events.init_command_line_parser.add_listener(add_options)  # type: ignore[no-untyped-call]
events.test_start.add_listener(start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(check)  # type: ignore[no-untyped-call]


class SimulationUser(HttpUser):
    """A virtual user: a fresh basicauth identity doing the scenario's actions back to back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None
        username, password = f"user-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        self.user = VirtualUser(
            Run.world,
            LocustClient(self.client, (username, password)),
            LocustClient(self.client, Run.world.target.follower),
            username,
            password,
            random.Random(),
            options.load_action,
        )
        try:
            self.user.start()
        except UnexpectedReply as exc:
            raise StopUser() from exc

    @task
    def hit(self) -> None:
        if Run.limited:
            if Run.hits_left <= 0:
                if not Run.stopping:
                    Run.stopping = True
                    gevent.spawn(self.environment.runner.quit)
                raise StopUser()
            Run.hits_left -= 1
        # An unexpected reply is already a failure in locust's statistics: the run exits non-zero.
        with contextlib.suppress(UnexpectedReply):
            Run.done[self.user.hit()] += 1
