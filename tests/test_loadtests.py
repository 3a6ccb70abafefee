from __future__ import annotations

import hashlib
import hmac
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml
from werkzeug.serving import make_server

from kiln import create_app
from kiln.config import Configuration
from loadtests import invariants, run, scenario
from loadtests.scenario import (
    ACTIONS,
    HTTPClient,
    Journal,
    Picker,
    Target,
    UnexpectedReply,
    VirtualUser,
    World,
)

ROOT = Path(__file__).resolve().parent.parent
TESTAPP = ROOT / "loadtests" / "testapp.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def faults_config(directory: Path, *middleware: str) -> Path:
    path = directory / "faults.yaml"
    names = [f"tests.loadtests_faults.{name}" for name in middleware]
    path.write_text(yaml.safe_dump({"middleware": names}))
    return path


@contextmanager
def serving(tmp_path: Path, *middleware: str) -> Iterator[str]:
    paths = [str(TESTAPP)]
    if middleware:
        paths.append(str(faults_config(tmp_path, *middleware)))
    storage = {"KILN_STORAGE__URL": str(tmp_path / "testapp.sqlite")}
    app = create_app(Configuration(paths=paths, environ=storage))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def clients(url: str):
    return lambda auth: HTTPClient(url, auth)


def users(
    world: World, url: str, count: int = 2, *, seed: int = 7, focus: str = ""
) -> list[VirtualUser]:
    made = []
    for number in range(count):
        username, password = f"user-{seed}-{number}", f"pw-{number}"
        user = VirtualUser(
            world,
            HTTPClient(url, (username, password)),
            HTTPClient(url, world.target.follower),
            username,
            password,
            random.Random(seed * 100 + number),
            focus,
        )
        user.start()
        made.append(user)
    return made


def simulate(url: str, *, hits: int, count: int = 2, seed: int = 7, focus: str = "") -> World:
    world = World()
    team = users(world, url, count, seed=seed, focus=focus)
    for number in range(hits):
        team[number % count].hit()
    return world


def test_the_followers_principal_in_testapp_yaml_is_basicauths_id_of_its_credentials():
    config = yaml.safe_load(TESTAPP.read_text())
    secret = config["auth"]["userid_hmac_secret"].encode()
    user, password = Target().follower
    digest = hmac.new(secret, f"{user}:{password}".encode(), hashlib.sha256).hexdigest()
    assert config["psilo"]["read_principals"] == [f"basicauth:{digest}"]


def test_every_action_against_kiln_keeps_every_invariant(tmp_path):
    with serving(tmp_path) as url:
        world = simulate(url, hits=3 * len(ACTIONS), seed=1)
        report = invariants.check(world, clients(url))
    assert report.ok, report.summary()
    assert report.summary().startswith("invariants: all kept (")
    for what in ("preconditions", "acknowledged records", "permissions", "access checks",
                 "owned collections", "followers", "records listed"):  # fmt: skip
        assert report.checked[what] > 0, what
    kinds = {expected.collection.split("/")[1] for expected in world.journal.records.values()}
    assert kinds == {"psilos", "notes"}
    assert any(
        expected.collection.endswith("/sightings") for expected in world.journal.records.values()
    )
    assert any(expected.data is None for expected in world.journal.records.values())
    assert any(write.stale and write.status == 412 for write in world.journal.conditionals)


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_each_action_alone_keeps_every_invariant(tmp_path, name):
    with serving(tmp_path) as url:
        world = simulate(url, hits=6, seed=3, focus=name)
        report = invariants.check(world, clients(url))
    assert report.ok, report.summary()


def test_actions_on_a_user_without_records_fall_back_to_creating_one(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=0)
        (user,) = users(world, url, 1)
        for name in ("read", "update", "replace", "json_patch", "merge_patch", "delete",
                     "batch_update", "share", "conflict", "nested"):  # fmt: skip
            for expected in user.mine(world.target.shared):
                expected.uncertain = True  # as if its state were unknown: not chosen again
            ACTIONS[name][2](user)
            assert len(user.mine(world.target.shared)) == 1, name
        report = invariants.check(world, clients(url))
    assert report.ok, report.summary()


def test_a_write_acknowledged_but_dropped_by_the_server_is_reported(tmp_path):
    with serving(tmp_path, "DropOneWrite") as url:
        world = World()
        (user,) = users(world, url, 1)
        ACTIONS["update"][2](user)
        report = invariants.check(world, clients(url))
    assert not report.ok
    assert any(v.startswith("acknowledged write lost: /psilos/") for v in report.violations)


def test_a_since_feed_that_skips_a_change_leaves_the_followers_replica_behind(tmp_path):
    with serving(tmp_path, "SkipOneChange") as url:
        world = World()
        (user,) = users(world, url, 1)
        user.follower.poll()
        ACTIONS["create"][2](user)
        user.follower.poll()
        report = invariants.check(world, clients(url))
    (violation,) = report.violations
    assert violation.startswith(
        "follower 0: its replica differs from the server's collection: missing ['"
    )


def test_a_record_listed_twice_across_pages_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(invariants, "PAGE", 10)
    with serving(tmp_path, "RepeatOnNextPage") as url:
        world = World(seed_records=20)
        (user,) = users(world, url, 1)
        user.create_many(10, name="seed")  # 30: two pages of the final list too
        violations: list[str] = []
        scenario.list_all(user.client, world.url(world.target.shared, _limit=5), "l", violations)
        report = invariants.check(world, clients(url))
    assert len(violations) == 5  # 30 records, 6 pages: the first of pages 2 to 6 twice
    assert violations[0].startswith("l: ")
    assert " listed twice following /v1/psilos?_limit=5" in violations[0]
    assert any(v.startswith("final list: ") and "listed twice" in v for v in report.violations)


def test_answers_that_contradict_the_request_are_reported_by_each_action(tmp_path):
    with serving(tmp_path, "Liar") as url:
        world = World(seed_records=6)
        alice, _ = users(world, url, 2)
        parent = alice.mine(world.target.shared)[0]
        for name in ("list_pages", "count", "read", "update", "replace", "json_patch",
                     "merge_patch", "share", "conflict", "nested", "delete"):  # fmt: skip
            for _ in range(8):
                for expected in alice.mine(world.target.shared):
                    if expected is not parent:
                        expected.data = {**(expected.data or {}), "size": 50, "kind": "morel"}
                with suppress(UnexpectedReply):
                    ACTIONS[name][2](alice)
    text = "\n".join(world.journal.violations)
    for expected in (
        " against _sort=", "does not match the filter of",
        "is missing from /v1/psilos", "count: /v1/psilos", "read: /psilos/",
        "has permissions {'read': ['nobody']}", "update: /psilos/", "replace: /psilos/",
        "json_patch: /psilos/", "merge_patch: /psilos/", "share: /psilos/",
        "shows {}, not its current version", "nested: /psilos/", "answered no tombstone",
    ):  # fmt: skip
        assert expected in text, expected


def test_lists_that_differ_by_sort_are_reported(tmp_path):
    with serving(tmp_path, "HideFromOneSort") as url:
        world = simulate(url, hits=0, count=1)
        report = invariants.check(world, clients(url))
    assert any(
        v.startswith("final list: sorting by name lists other records") for v in report.violations
    )
    summary = report.summary()
    assert summary.startswith(f"invariants: {len(report.violations)} broken (")
    assert "  - final list: sorting by name lists other records" in summary
    assert "more" not in summary


def test_another_users_private_note_is_a_404(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=0)
        alice, bob = users(world, url, 2)
        for _ in range(20):  # nobody else has notes yet
            ACTIONS["private"][2](bob)
        ACTIONS["private"][2](alice)
        for _ in range(20):
            ACTIONS["private"][2](bob)
        report = invariants.check(world, clients(url))
    assert report.ok, report.summary()


def test_a_412_is_an_invariant_only_where_the_etag_was_stale():
    journal = Journal()
    journal.conditional("update", "/psilos/a", stale=False, status=200)
    journal.conditional("update", "/psilos/b", stale=False, status=412)
    journal.conditional("conflict", "/psilos/c", stale=True, status=412)
    journal.conditional("conflict", "/psilos/d", stale=True, status=200)
    report = invariants.Report()
    invariants.check_conditionals(journal, report)
    assert report.violations == [
        "update: a fresh precondition on /psilos/b answered 412",
        "conflict: a stale precondition on /psilos/d answered 200, not 412",
    ]
    assert report.checked == {"preconditions": 4}


def test_changes_behind_the_journals_back_break_the_access_and_ownership_invariants(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=3)
        alice, bob = users(world, url, 2)
        ACTIONS["nested"][2](alice)
        ACTIONS["private"][2](alice)
        shared = alice.mine(world.target.shared)
        # What the journal never saw: a new share, a resurrected record, an extra note.
        record = next(e for e in shared if not e.uri.endswith("sightings"))
        alice.client.request(
            "PATCH", world.url(record.uri), name="behind", expect=(200,),
            body={"permissions": {"read": [bob.principal]}},
        )  # fmt: skip
        gone = next(e for e in shared if e is not record)
        data = {k: v for k, v in gone.data.items() if k not in ("id", "last_modified")}
        alice.write("delete", "DELETE", gone, None)
        alice.client.request(
            "PUT", world.url(gone.uri), name="behind", expect=(201,), body={"data": data}
        )
        alice.client.request(
            "POST", world.url(world.target.private), name="behind", expect=(201,),
            body={"data": {"text": "unseen"}},
        )  # fmt: skip
        lost = next(e for e in alice.mine(world.target.shared) if e not in (record, gone))
        alice.client.request("DELETE", world.url(lost.uri), name="behind", expect=(200,))
        report = invariants.check(world, clients(url))
    text = "\n".join(report.violations)
    assert f"{record.uri}: permissions are " in text
    assert f"{record.uri}: as {bob.username}: " in text
    assert f"{gone.uri} was deleted (acknowledged), but is listed" in text
    assert f"{world.target.private} as {alice.username}: lists " in text
    assert f"acknowledged write lost: {lost.uri} is not listed" in text
    if any(e.collection.startswith(lost.uri) for e in world.journal.records.values()):
        assert f"/sightings as {alice.username}: final list: GET " in text


def test_a_server_that_cannot_list_fails_the_check_with_one_sentence(tmp_path):
    with serving(tmp_path) as url:
        world = simulate(url, hits=4)
    report = invariants.check(world, clients(url))
    assert not report.ok
    assert report.violations[-1].startswith(
        "the shared collection cannot be listed: final list: GET "
    )


def test_unreadable_records_and_followers_are_reported(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=1)
        (alice,) = users(world, url, 1)
        (record,) = alice.mine(world.target.shared)
        ACTIONS["private"][2](alice)
        (note,) = alice.mine(world.target.private)
        note.uncertain = True  # its collection is not checked exactly
        alice.password = "changed"  # another basicauth identity: no longer the owner
        alice.follower.client = HTTPClient("http://127.0.0.1:1", None)
        gone = "5b1b5a57-3b4c-4d0e-9a5e-1f0c1c1c1c1c"
        deleted = scenario.Expected(alice.username, world.target.shared, gone, None, 1)
        world.journal.records[("", deleted.uri)] = deleted
        report = invariants.check(world, clients(url))
    text = "\n".join(report.violations)
    assert f"{record.uri}: its owner cannot read it: final read: GET " in text
    assert "follower 0: final sync: GET " in text
    assert f"{deleted.uri} was deleted (acknowledged), but is listed" not in text
    assert "/notes" not in text


def test_a_conditional_write_without_an_answer_logs_no_status(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=1)
        (user,) = users(world, url, 1)
        (expected,) = user.mine(world.target.shared)
    with pytest.raises(UnexpectedReply, match=" failed: "):
        user.write("update", "PATCH", expected, {"data": {"size": 1}})
    assert expected.uncertain
    assert world.journal.conditionals == []


def test_the_summary_lists_at_most_fifty_violations():
    report = invariants.Report(violations=[f"broken {n}" for n in range(53)])
    report.count("records listed", 9)
    lines = report.summary().splitlines()
    assert lines[0] == "invariants: 53 broken (9 records listed)"
    assert lines[1] == "  - broken 0"
    assert lines[-1] == "  ... and 3 more"
    assert len(lines) == 52


def test_an_unexpected_status_or_a_network_error_is_an_unexpected_reply(tmp_path):
    with serving(tmp_path) as url:
        client = HTTPClient(url, None)
        with pytest.raises(UnexpectedReply) as excinfo:
            client.request("GET", "/v1/psilos", name="list", expect=(200,))
        assert excinfo.value.reply is not None
        assert excinfo.value.reply.status == 401
        assert str(excinfo.value).startswith('list: GET /v1/psilos answered 401 {"code": 401')
        reply = client.request("GET", "/__lbheartbeat__", name="lb", expect=(200,))
        assert reply.body == {}
    with pytest.raises(UnexpectedReply) as excinfo:
        HTTPClient(url, None, timeout=1).request("GET", "/", name="down", expect=(200,))
    assert excinfo.value.reply is None
    assert str(excinfo.value).startswith("down: GET / failed: ")


def test_bodies_that_are_not_json_decode_to_none():
    assert scenario.decode(b"") is None
    assert scenario.decode(b"<html>") is None
    assert scenario.decode(b'{"a": 1}') == {"a": 1}


def test_next_page_urls_are_followed_on_the_server_under_test_only():
    assert scenario.relative("http://elsewhere.example/v1/psilos?_token=x") == "/v1/psilos?_token=x"
    assert scenario.relative("http://127.0.0.1:1/v1/") == "/v1/"


def test_sort_keys_order_like_the_protocol():
    records = [
        {"id": "b", "name": "ab", "last_modified": 2},
        {"id": "a", "name": "a", "last_modified": 1},
        {"id": "c", "name": "b", "last_modified": 3},
    ]
    ascending = sorted(records, key=lambda r: scenario.sort_key(r, ("name",)))
    assert [r["name"] for r in ascending] == ["a", "ab", "b"]
    descending = sorted(records, key=lambda r: scenario.sort_key(r, ("-name",)))
    assert [r["name"] for r in descending] == ["b", "ab", "a"]
    newest = sorted(records, key=lambda r: scenario.sort_key(r, ("-last_modified",)))
    assert [r["id"] for r in newest] == ["c", "b", "a"]


def test_check_order_reports_the_scenarios_records_out_of_order_only():
    first = {"id": "1", "name": "agaric-000000000001", "last_modified": 1}
    second = {"id": "2", "name": "agaric-000000000002", "last_modified": 2}
    foreign = {"id": "3", "name": "Zzz", "last_modified": 3}
    assert scenario.check_order([first, foreign, second], ("name",), "l", "/u") == []
    assert scenario.check_order([second, first], ("name",), "l", "/u") == [
        "l: 1 listed after 2 against _sort=name (/u)"
    ]


def test_the_picker_runs_every_action_once_then_by_weight():
    names = list(ACTIONS)
    picker = Picker(names, random.Random(1))
    assert sorted(picker.next() for _ in names) == sorted(names)
    assert all(picker.next() in names for _ in range(50))


def test_load_action_focuses_the_picker_on_one_action():
    picker = Picker(list(ACTIONS), random.Random(1), "batch_create")
    assert {picker.next() for _ in range(10)} == {"batch_create"}
    with pytest.raises(ValueError, match="LOAD_ACTION 'nope' is not an action of this target"):
        Picker(list(ACTIONS), random.Random(1), "nope")


def test_a_kinto_like_target_turns_off_private_nested_and_unique_actions():
    kinto = Target(shared="/buckets/b/collections/c/records", private="", nested="",
                   unique_conflicts=False)  # fmt: skip
    names = scenario.available_actions(kinto)
    assert "private" not in names
    assert "nested" not in names
    assert "conflict" in names
    assert set(scenario.available_actions(Target())) == set(ACTIONS)


def test_the_follower_stops_following_pages_after_max_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(scenario, "MAX_PAGES", 1)
    with serving(tmp_path) as url:
        world = World(seed_records=0)
        (user,) = users(world, url, 1)
        for _ in range(3):
            user.create_many(20, name="seed")
        assert user.follower.poll() == 50
        violations: list[str] = []
        listed = scenario.list_all(
            user.client, world.url(world.target.shared, _limit=10), "l", violations
        )
    assert len(listed) == 10
    first_page = world.url(world.target.shared, _limit=10)
    assert violations == [f"l: more than 1 pages following {first_page}: a pagination loop?"]


def test_a_fresh_if_match_answered_412_is_logged_and_makes_the_record_uncertain(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=1)
        (user,) = users(world, url, 1)
        (expected,) = user.mine(world.target.shared)
        expected.last_modified -= 1  # what we believe is now stale
        with pytest.raises(UnexpectedReply, match=r"update: PATCH /v1/psilos/.* answered 412"):
            user.write("update", "PATCH", expected, {"data": {"size": 1}})
    assert expected.uncertain
    assert world.journal.conditionals[-1].status == 412
    assert not world.journal.conditionals[-1].stale


def test_batch_sub_requests_that_fail_are_reported(tmp_path):
    with serving(tmp_path) as url:
        world = World(seed_records=1)
        (user,) = users(world, url, 1)
        (stale,) = user.mine(world.target.shared)
        stale.last_modified -= 1
        missing = scenario.Expected(user.username, world.target.shared, "no-such-id", {}, 5)
        world.journal.records[("", missing.uri)] = missing
        ACTIONS["batch_update"][2](user)
    assert stale.uncertain
    assert missing.uncertain
    (violation,) = world.journal.violations
    assert violation.startswith("batch_update: /psilos/no-such-id answered 4")


def test_a_batch_create_with_a_refused_sub_request_is_an_unexpected_reply(tmp_path):
    with serving(tmp_path) as url:
        world = World(target=Target(shared="/psilos/not-a-collection"))
        with pytest.raises(UnexpectedReply, match="seed: a batch create answered 405"):
            users(world, url, 1)


def test_server_environment_chooses_sqlite_or_postgresql(tmp_path):
    env = run.server_environment([str(TESTAPP)], "", tmp_path)
    assert env["KILN_CONFIG"] == str(TESTAPP)
    assert (env["KILN_STORAGE__BACKEND"], env["KILN_STORAGE__URL"]) == (
        "sqlite", str(tmp_path / "testapp.sqlite"),
    )  # fmt: skip
    url = "postgresql://postgres@127.0.0.1/kiln_loadtest"
    env = run.server_environment([str(TESTAPP), "extra.yaml"], url, tmp_path)
    assert env["KILN_CONFIG"].split(":")[1] == str(Path("extra.yaml").resolve())
    assert (env["KILN_STORAGE__BACKEND"], env["KILN_STORAGE__URL"]) == ("postgresql", url)


@pytest.mark.slow
def test_the_check_simulation_passes_against_kiln(capfd):
    assert run.main(["--", "--hits", "60", "--users", "2", "--spawn-rate", "2"]) == 0
    out = capfd.readouterr().out
    assert "invariants: all kept (" in out
    assert "loadtests: passed" in out


@pytest.mark.slow
def test_the_check_simulation_fails_on_a_server_that_drops_a_write(tmp_path, capfd):
    faults = faults_config(tmp_path, "DropOneWrite")
    status = run.main(
        ["--config", str(TESTAPP), "--config", str(faults), "--",
         "--hits", "60", "--load-action", "update", "--users", "1", "--spawn-rate", "1"]
    )  # fmt: skip
    out = capfd.readouterr().out
    assert status != 0
    assert "invariants: " in out
    # The dropped write is lost, or a later write on that record, sent with the
    # ETag the server made up, came back 412: either way, an invariant broke.
    assert "acknowledged write lost: /psilos/" in out or "a fresh precondition on /psilos/" in out
    assert f"loadtests: FAILED (exit status {status})" in out


@pytest.mark.slow
def test_an_unknown_load_action_stops_locust_with_status_2(capfd):
    assert run.main(["--", "--load-action", "nope", "--hits", "5"]) == 2
    assert "LOAD_ACTION 'nope' is not an action of this target" in capfd.readouterr().err


def test_a_config_that_kiln_migrate_refuses_fails_before_serving(tmp_path, capfd):
    broken = tmp_path / "broken.yaml"
    broken.write_text("debug: {enabled: maybe}\n")
    assert run.main(["--config", str(TESTAPP), "--config", str(broken)]) == 1
    assert "loadtests: kiln migrate failed:" in capfd.readouterr().err


def test_a_server_that_exits_at_startup_fails_the_run(monkeypatch, capfd):
    # Its port is taken: gunicorn gives up binding it and exits.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(run, "free_port", lambda: taken.getsockname()[1])
        assert run.main([]) == 1
    captured = capfd.readouterr()
    assert "loadtests: the server exited with " in captured.err
    assert "loadtests: FAILED (exit status 1)" in captured.out


def test_a_server_that_does_not_answer_in_time_fails_the_run(monkeypatch, capfd):
    monkeypatch.setattr(run, "START_TIMEOUT", 0)
    assert run.main([]) == 1
    assert "loadtests: the server did not answer within 0 s" in capfd.readouterr().err


def test_a_locust_run_over_its_time_limit_fails(monkeypatch, capfd):
    monkeypatch.setattr(run, "LOCUST_TIMEOUT", 0.01)
    assert run.main([]) == 1
    assert "' timed out after 0.0" in capfd.readouterr().err


def test_a_server_ignoring_sigterm_is_killed_by_its_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "STOP_TIMEOUT", 0.2)
    server = run.Server({}, run.free_port(), tmp_path / "log")
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    server.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert server.process.stdout is not None
    assert server.process.stdout.readline() == b"ready\n"
    process = server.process
    server.stop()
    assert process.returncode == -9
    server.stop()  # stopping twice is harmless
