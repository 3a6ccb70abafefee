"""kiln's gunicorn config (``-c python:kiln.gunicorn``) against a real gunicorn (#15)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import gunicorn.config
import pytest

import kiln.gunicorn
from kiln.gunicorn import build_problem
from tests.test_cli import clean_env, free_port, http_get, running, write
from tests.test_wsgi import VIEWS, gunicorn_args

EXTRA_VIEWS = """\
from kiln import app


@app.route("/v1/extra", methods=["GET"])
def extra():
    return {"extra": True}
"""


def kiln_gunicorn(port: int, workers: int = 2, worker_class: str = "sync") -> list[str]:
    args = gunicorn_args("kiln.wsgi:application", port)
    args[args.index("--workers") + 1] = str(workers)
    threads = ["--threads", "4"] if worker_class == "gthread" else []
    return [
        *args,
        *("-c", "python:kiln.gunicorn", "--graceful-timeout", "5"),
        *("--worker-class", worker_class, *threads),
    ]


class Traffic(threading.Thread):
    """Requests ``url`` without pause until stopped; counts what answered."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: Counter[Any] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.answers[response.status] += 1
            except urllib.error.HTTPError as exc:
                self.answers[exc.code] += 1
            except OSError as exc:  # refused, reset: the service did not answer
                self.answers[type(exc).__name__] += 1

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)


def workers_of(master: int) -> set[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return {int(pid) for pid in path.read_text().split()}


def configs(base: str, workers: set[int]) -> dict[int, dict[str, Any]]:
    """``/__config__`` of every one of ``workers`` (asked until each answered)."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while set(seen) < workers and time.monotonic() < deadline:
        status, body = http_get(f"{base}/__config__")
        assert status == 200, body
        answer = json.loads(body)
        seen[answer["pid"]] = answer
    assert set(seen) >= workers
    return {pid: seen[pid] for pid in workers}


def eventually(predicate: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_a_broken_config_plus_sighup_never_stops_the_service(tmp_path, worker_class):
    write(tmp_path / "owner_views.py", VIEWS)
    write(tmp_path / "extra_views.py", EXTRA_VIEWS)
    config = write(tmp_path / "c.yaml", "owner: ada\nviews: [owner_views]\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    env = clean_env(KILN_CONFIG=str(config))

    def owner() -> str:
        status, body = http_get(f"{base}/v1/owner")
        assert status == 200, body
        return str(json.loads(body)["owner"])

    url = f"{base}/__lbheartbeat__"
    args = kiln_gunicorn(port, worker_class=worker_class)
    with running(args, cwd=tmp_path, env=env, log=log, url=url) as master:
        hup = lambda: os.kill(master.pid, signal.SIGHUP)  # noqa: E731
        workers = eventually(lambda: len(workers_of(master.pid)) == 2 and workers_of(master.pid))
        first = configs(base, workers)
        assert {(c["generation"], c["last_reload_failed"]) for c in first.values()} == {(1, False)}
        with Traffic(f"{base}/v1/owner") as traffic:
            # Twenty reloads at 10/s: applied in place, no worker restarted.
            for _ in range(20):
                hup()
                time.sleep(0.1)
            assert eventually(
                lambda: all(c["generation"] > 1 for c in configs(base, workers).values())
            )
            assert workers_of(master.pid) == workers

            # A broken file: refused everywhere, said at ERROR, the last good config serves.
            write(config, "owner: [ada\n")
            hup()
            assert eventually(
                lambda: all(c["last_reload_failed"] for c in configs(base, workers).values())
            )
            generations = {c["generation"] for c in configs(base, workers).values()}
            assert owner() == "ada"
            # The master's line in gunicorn's error log, and each worker's.
            failed = "Config reload failed, keeping the previous config (generation"
            assert eventually(lambda: log.read_text().count(failed) == 3)
            assert re.search(rf"\[{master.pid}\] \[ERROR\] {re.escape(failed)}", log.read_text())

        # Nothing was refused while all this happened.
        assert set(traffic.answers) == {200}, traffic.answers
        assert traffic.answers[200] > 50

        # A worker started now (a crash: its request in flight is lost, so no
        # traffic meanwhile) gets the master's last good config.
        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        workers = eventually(
            lambda: len(now := workers_of(master.pid)) == 2 and killed not in now and now
        )
        fresh = configs(base, workers)
        assert all(c["last_reload_failed"] for c in fresh.values())
        assert {c["generation"] for c in fresh.values()} <= generations
        assert owner() == "ada"

        with Traffic(f"{base}/v1/owner") as traffic:
            # Fixed: the new generation shows on every worker, still in place.
            write(config, "owner: bob\nviews: [owner_views]\n")
            hup()
            assert eventually(
                lambda: all(not c["last_reload_failed"] for c in configs(base, workers).values())
            )
            assert owner() == "bob"
            assert workers_of(master.pid) == workers

            # A change the app cannot follow restarts the workers, once it builds...
            write(config, "owner: bob\nviews: [owner_views, extra_views]\n")
            hup()
            assert eventually(lambda: http_get(f"{base}/v1/extra")[0] == 200)
            restarted = eventually(
                lambda: len(now := workers_of(master.pid)) == 2 and not now & workers and now
            )
            assert restarted

            # ... and is refused like a broken file when it does not.
            write(config, "owner: eve\nviews: [owner_views, missing_module_q7]\n")
            hup()
            assert eventually(
                lambda: all(c["last_reload_failed"] for c in configs(base, restarted).values())
            )
            assert owner() == "bob"
            assert workers_of(master.pid) == restarted
            assert "missing_module_q7" in log.read_text()
            assert master.poll() is None
        # Nothing was refused while all this happened.
        assert set(traffic.answers) == {200}, traffic.answers
        assert traffic.answers[200] > 50


@pytest.mark.parametrize("text", ["{oops", "views: [missing_module_q7]\n"])
def test_kiln_gunicorn_still_stops_at_once_on_a_config_broken_at_startup(tmp_path, text):
    config = write(tmp_path / "c.yaml", text)
    port = free_port()
    process = subprocess.run(
        kiln_gunicorn(port, workers=1),
        cwd=tmp_path,
        env=clean_env(KILN_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 3
    assert "kiln: cannot start:" in process.stderr


def test_the_master_tries_a_config_that_needs_a_restart_in_a_throwaway_child(tmp_path, monkeypatch):
    write(tmp_path / "slow_views_q7.py", "import time\n\ntime.sleep(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build_problem({"project": {"name": "fine"}}) is None
    problem = build_problem({"views": ["missing_module_q7"]})
    assert problem is not None
    assert problem.startswith("The app does not build with this config: views module")
    monkeypatch.setattr(kiln.gunicorn, "APP_CHECK_SECONDS", 0.5)
    started = time.monotonic()
    assert build_problem({"views": ["slow_views_q7"]}) == ("Building the app took more than 0.5 s.")
    assert time.monotonic() - started < 3


def raw_get(port: int, target: str, headers: dict[str, str]) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_kiln_answers_over_long_urls_and_headers_before_gunicorn_does(tmp_path):
    config = write(tmp_path / "c.yaml", "project: {name: limits}\n")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = clean_env(KILN_CONFIG=str(config))
    url = f"http://127.0.0.1:{port}/__lbheartbeat__"
    with running(kiln_gunicorn(port, workers=1), cwd=tmp_path, env=env, log=log, url=url):
        cases = {
            # gunicorn alone answers these with its HTML page (its defaults:
            # 4094-byte request line, 100 fields of 8190 bytes).
            "url": ("/v1/?q=" + "a" * 7000, {}, 414, "The URL is 7007 bytes long"),
            "field": ("/v1/", {"X-Big": "b" * 9000}, 431, "Header field X-Big is 9007 bytes"),
            "fields": (
                "/v1/",
                {f"X-Field-{n}": "1" for n in range(120)},
                431,
                "header fields; this service accepts at most 100",
            ),
        }
        for name, (target, headers, status, message) in cases.items():
            got, content_type, body = raw_get(port, target, headers)
            assert (got, content_type) == (status, "application/json"), (name, body)
            answer = json.loads(body)
            assert (answer["code"], answer["errno"]) == (status, 107)
            assert message in answer["message"], name
        # Within kiln's limits, served; past gunicorn's own, gunicorn answers.
        assert raw_get(port, "/v1/?q=" + "a" * 6000, {"X-Big": "b" * 8000})[0] == 200
        assert raw_get(port, "/v1/?q=" + "a" * 9000, {})[0] == 414


def test_a_worker_that_exits_is_forgotten_by_the_live_gauges_only(tmp_path, monkeypatch):
    # gunicorn calls the config module's child_exit in the master.
    assert "child_exit" in gunicorn.config.Config().settings
    names = ["counter_4242.db", "gauge_livesum_4242.db", "gauge_livesum_7.db", "histogram_4242.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    kiln.gunicorn.child_exit(None, types.SimpleNamespace(pid=4242))  # Prometheus not shared
    assert sorted(path.name for path in tmp_path.iterdir()) == names
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    kiln.gunicorn.child_exit(None, types.SimpleNamespace(pid=4242))
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "counter_4242.db",
        "gauge_livesum_7.db",
        "histogram_4242.db",
    ]
