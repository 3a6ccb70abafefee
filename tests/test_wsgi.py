from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gunicorn.config
import pytest
from flask import Flask

from kiln.application import get_app
from kiln.wsgi import WORKER_BOOT_ERROR, claim_report
from tests.test_cli import (
    BIN,
    clean_env,
    free_port,
    http_get,
    isolated_global_config,
    running,
    write,
)

# gunicorn >= 23 opens a control socket in ~/.gunicorn; two servers would share it.
NO_CONTROL_SOCKET = [
    "--no-control-socket"
    for setting in gunicorn.config.KNOWN_SETTINGS
    if setting.name == "control_socket_disable"
]
VIEWS = """\
from kiln import app, config


@app.route("/v1/owner", methods=["GET"])
def owner():
    return {"owner": config.get("owner")}
"""


@pytest.fixture
def global_config(monkeypatch):
    with isolated_global_config(monkeypatch) as config:
        yield config


@pytest.fixture
def fresh_wsgi() -> Iterator[None]:
    saved = {name: sys.modules.pop(name) for name in ("kiln.wsgi",) if name in sys.modules}
    yield
    sys.modules.pop("kiln.wsgi", None)
    sys.modules.update(saved)


def test_importing_kiln_wsgi_builds_the_process_wide_app(
    global_config, fresh_wsgi, monkeypatch, tmp_path
):
    config = write(tmp_path / "c.yaml", "project: {name: wsgi}\n")
    monkeypatch.setenv("KILN_CONFIG", str(config))
    module = importlib.import_module("kiln.wsgi")
    assert isinstance(module.application, Flask)
    assert module.application is get_app()
    response = module.application.test_client().get("/v1/")
    assert response.json["project_name"] == "wsgi"


def test_importing_kiln_wsgi_with_a_broken_config_exits_with_the_boot_error_code(
    global_config, fresh_wsgi, monkeypatch, tmp_path, capsys
):
    config = write(tmp_path / "c.json", "{oops")
    monkeypatch.setenv("KILN_CONFIG", str(config))
    with pytest.raises(SystemExit) as excinfo:
        importlib.import_module("kiln.wsgi")
    assert excinfo.value.code == WORKER_BOOT_ERROR == 3
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__
    err = capsys.readouterr().err
    assert err.startswith(f"kiln: cannot start: Config file '{config}' is not valid JSON")
    assert len(err.splitlines()) == 1


def gunicorn_args(target: str, port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        target,
        "-b",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        *NO_CONTROL_SOCKET,
    ]


def start_gunicorn(cwd: Path, config: Path, workers: int = 1) -> subprocess.CompletedProcess[str]:
    """Run gunicorn on ``config`` until it stops (it does at once on a broken config)."""
    args = gunicorn_args("kiln.wsgi:application", free_port())
    args[args.index("--workers") + 1] = str(workers)
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_env(KILN_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gunicorn_serves_kiln_wsgi_application(tmp_path):
    write(tmp_path / "owner_views.py", VIEWS)
    write(tmp_path / "c.yaml", "project: {name: prod}\nowner: ada\nviews: [owner_views]\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(KILN_CONFIG="c.yaml")
    log = tmp_path / "gunicorn.log"
    args = gunicorn_args("kiln.wsgi:application", port)
    with running(args, cwd=tmp_path, env=env, log=log, url=f"{base}/__lbheartbeat__"):
        status, body = http_get(f"{base}/v1/")
        assert (status, json.loads(body)["project_name"]) == (200, "prod")
        status, body = http_get(f"{base}/v1/owner")
        assert (status, json.loads(body)) == (200, {"owner": "ada"})
        status, body = http_get(f"{base}/v1/nowhere")
        assert (status, json.loads(body)["errno"]) == (404, 111)


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("c.json", '{"debug": ', "Config file '{path}' is not valid JSON"),
        ("c.yaml", "views: [missing_module_q7]\n", "views module 'missing_module_q7' failed"),
    ],
)
def test_gunicorn_stops_at_once_on_a_broken_config(tmp_path, filename, text, message):
    path = write(tmp_path / filename, text)
    process = start_gunicorn(tmp_path, path)
    assert process.returncode != 0
    assert f"kiln: cannot start: {message.format(path=path)}" in process.stderr
    assert "Traceback" not in process.stderr
    assert "Reason: Worker failed to boot." in process.stderr


def test_gunicorn_worker_exits_with_gunicorns_boot_error_code(tmp_path):
    path = write(tmp_path / "c.json", "[]")
    process = start_gunicorn(tmp_path, path)
    assert process.returncode == WORKER_BOOT_ERROR
    assert f"exited with code {WORKER_BOOT_ERROR}" in process.stderr
    assert "must hold a mapping at its top level, not a list." in process.stderr


def test_the_worker_boot_error_code_matches_gunicorns():
    from gunicorn.arbiter import Arbiter

    assert Arbiter.WORKER_BOOT_ERROR == WORKER_BOOT_ERROR


def test_an_absent_config_file_is_reported_by_path(tmp_path):
    missing = Path(tmp_path / "nowhere.yaml")
    process = start_gunicorn(tmp_path, missing)
    assert process.returncode == WORKER_BOOT_ERROR
    assert f"kiln: cannot start: Config file '{missing}' does not exist." in process.stderr


@pytest.mark.parametrize("workers", [2, 4])
def test_gunicorn_with_several_workers_reports_a_broken_config_once(tmp_path, workers):
    path = write(tmp_path / "c.json", "{oops")
    process = start_gunicorn(tmp_path, path, workers)
    assert process.returncode == WORKER_BOOT_ERROR
    assert process.stderr.count(f"kiln: cannot start: Config file '{path}' is not valid") == 1
    assert "Traceback" not in process.stderr
    assert "Reason: Worker failed to boot." in process.stderr


# A process that imports kiln.wsgi as a gunicorn worker does: gunicorn's worker has
# installed its SIGTERM handler first. Then a broken config makes it leave.
_AS_A_WORKER = """
import signal
from gunicorn.workers.base import Worker

worker = Worker.__new__(Worker)  # nothing of a running worker is needed to hold the handler
signal.signal(signal.SIGTERM, worker.handle_exit)
import kiln.wsgi
"""


def test_a_worker_whose_sibling_reports_waits_for_it_then_leaves_quietly(tmp_path):
    # The sibling that claimed the report: alive for a moment, as while the
    # arbiter takes its exit status.
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    reaper = threading.Thread(target=sibling.wait)  # as the arbiter reaps it
    reaper.start()
    env = clean_env(KILN_CONFIG=write(tmp_path / "c.json", "{oops"), TMPDIR=str(tmp_path))
    started = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()[19]
    arbiter = f"{os.getpid()}@{started}"  # the worker's parent: this process
    (tmp_path / f"kiln-gunicorn-boot-{os.getuid()}").write_text(f"{arbiter} {sibling.pid}")
    try:
        worker = subprocess.run(
            [sys.executable, "-c", _AS_A_WORKER],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sibling.poll() is not None  # it waited for the sibling to be gone
    finally:
        reaper.join(10)
    assert (worker.returncode, worker.stderr) == (0, "")  # no second report


def test_the_first_worker_of_an_arbiter_to_fail_claims_the_report(tmp_path):
    claims = str(tmp_path / "claims")
    assert claim_report("100@5", claims) is None
    assert claim_report("100@5", claims) == os.getpid()
    assert claim_report("100@6", claims) is None  # the same id, a later arbiter
    assert Path(claims).read_text() == f"100@6 {os.getpid()}"
    Path(claims).write_text("whatever was there")
    assert claim_report("100@6", claims) is None
    assert (Path(claims).stat().st_mode & 0o777) == 0o600
