from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from kiln import _scaffold
from kiln.__about__ import __version__
from kiln.cli import DEVSERVER_REFUSAL, RESTART_FILE_VARIABLE, ConfigWatcher, main
from kiln.config import CONFIG
from tests.pgschema import fresh_schema

BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------
# Helpers shared with test_wsgi.py and test_clay.py
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KILN_") and name != "CLAY_CONFIG"
    }
    env.update(extra)
    return env


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            http_get(url)
            return
        time.sleep(0.05)
    pytest.fail(f"the server did not answer {url}:\n{log.read_text()}")


def wait_for(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running(
    args: list[str], *, cwd: Path, env: dict[str, str], log: Path, url: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=output,
            # A suite started in the background of a script ignores SIGINT, and so
            # would the server (ignored signals are inherited): it must stop on it.
            preexec_fn=_default_sigint,
        )
    try:
        wait_until_serving(url, process, log)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def isolated_global_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # The process-wide CONFIG, unloaded, with KILN_*/CLAY_CONFIG cleared; restored after.
    for name in list(os.environ):
        if name.startswith("KILN_") or name == "CLAY_CONFIG":
            monkeypatch.delenv(name)
    saved = {
        key: value if key in ("config", "_lock") else copy.copy(value)
        for key, value in CONFIG.__dict__.items()
    }
    CONFIG.__dict__.pop("config", None)
    try:
        yield CONFIG
    finally:
        CONFIG.__dict__.clear()
        CONFIG.__dict__.update(saved)


@pytest.fixture
def global_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with isolated_global_config(monkeypatch) as config:
        yield config


@pytest.fixture
def sighup_restored() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# In-process commands
# --------------------------------------------------------------------------


@pytest.fixture
def cli(global_config: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, sighup_restored: None) -> dict[str, Any]:
    calls: dict[str, Any] = {}

    def fake_run_simple(host: str, port: int, application: Any, **options: Any) -> None:
        calls.update(host=host, port=port, application=application, options=options)

    monkeypatch.setattr("werkzeug.serving.run_simple", fake_run_simple)
    # The reloader's process names its restart file in the environment.
    monkeypatch.setenv(RESTART_FILE_VARIABLE, "")
    return calls


def test_version_option_prints_the_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.output == f"kiln, version {__version__}\n"


def test_help_is_available_on_every_command_with_dash_h(cli):
    for command in ([], ["serve"], ["devserver"], ["check"], ["settings"], ["init"]):
        result = cli(*command, "-h")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_top_level_help_summaries_are_whole_sentences(cli):
    result = cli("--help")
    commands = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == [
        "check",
        "devserver",
        "init",
        "migrate",
        "serve",
        "settings",
    ]
    for line in commands:
        assert line.endswith("."), line
        assert "..." not in line


def test_serve_and_devserver_help_say_how_they_differ(cli):
    serve = " ".join(cli("serve", "--help").output.split())
    assert "Threaded" in serve
    assert "For production use gunicorn" in serve
    assert "`devserver` is Clay's variant of this command." in serve
    devserver = " ".join(cli("devserver", "--help").output.split())
    assert "Refuses to run unless debug.enabled is true" in devserver
    assert "New projects use `kiln serve`." in devserver


def test_init_help_lists_what_it_writes(cli):
    text = " ".join(cli("init", "--help").output.split())
    assert "a resource and a view, five passing tests" in text
    assert "its `test` extra installs pytest" in text


def test_settings_lists_every_key_with_its_type_default_and_reload(cli):
    result = cli("settings")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert 'debug.server.host = "127.0.0.1"  # a string, restart. Dev server address.' in lines
    assert "debug.server.port = 8888  # an integer, restart. Dev server port." in lines
    assert any(line.startswith("views = []  # a list, restart. ") for line in lines)
    assert any(line.startswith("backoff = null  # an integer or null, reload. ") for line in lines)


def test_settings_in_markdown_is_a_table_with_reload_and_choices(cli):
    result = cli("settings", "--format", "markdown")
    lines = result.output.splitlines()
    assert lines[0] == "# Configuration reference"
    assert "| Key | Type | Default | Reload | Description |" in lines
    row = next(line for line in lines if line.startswith("| `debug.enabled`"))
    assert row == (
        "| `debug.enabled` | a boolean | `false` | restart "
        "| Development mode (required by `devserver`). |"
    )
    row = next(line for line in lines if line.startswith("| `logging_format`"))
    assert "| yes |" in row
    assert "One of: `text`, `json`." in row


def test_check_accepts_a_valid_config(cli, tmp_path):
    config = write(tmp_path / "service.yaml", "project:\n  name: ok\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0
    assert result.stdout == f"OK: the config from {config} is valid and the app builds.\n"


def test_check_builds_an_app_with_resources_without_writing_a_database(cli, tmp_path):
    database = tmp_path / "data.sqlite"
    config = write(
        tmp_path / "service.yaml",
        "views: [tests.resource.sample_resources]\n"
        f"storage: {{backend: sqlite, url: '{database}'}}\n",
    )
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0, result.output
    assert not database.exists()


def test_check_without_any_file_says_so(cli):
    result = cli("check")
    assert result.exit_code == 0
    assert "no file (defaults and environment only)" in result.stdout


def test_check_names_the_key_and_the_file_of_a_wrong_type(cli, tmp_path):
    config = write(tmp_path / "bad.yaml", "debug:\n  enabled: sometimes\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr == (
        f"kiln: error: Config key 'debug.enabled' (set in {config}) must be a boolean, "
        'got "sometimes" (str).\n'
    )


def test_check_names_a_file_that_does_not_parse(cli, tmp_path):
    config = write(tmp_path / "broken.json", '{"debug": ')
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"kiln: error: Config file '{config}' is not valid JSON")
    assert len(result.stderr.splitlines()) == 1


def test_check_reports_a_views_module_that_fails_to_import_in_one_line(cli, tmp_path):
    write(tmp_path / "exploding_views_a1.py", "raise RuntimeError('boom')\n")
    config = write(tmp_path / "c.yaml", "views: [exploding_views_a1]\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr.startswith("kiln: error: views module 'exploding_views_a1' failed")
    assert "RuntimeError: boom" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output


def test_check_reports_an_unknown_middleware_in_one_line(cli, tmp_path):
    config = write(tmp_path / "c.yaml", "middleware:\n  no_such_package.Middleware: {}\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr.startswith("kiln: error: middleware 'no_such_package.Middleware'")
    assert len(result.stderr.splitlines()) == 1


def test_check_with_debug_adds_the_traceback(cli, tmp_path):
    config = write(tmp_path / "c.yaml", "middleware:\n  no_such_package.Middleware: {}\n")
    result = cli("--debug", "-c", str(config), "check")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("kiln: error: middleware")


def test_check_warns_about_a_malformed_feature_flag_but_passes(cli, tmp_path):
    config = write(tmp_path / "c.yaml", "features:\n  shiny: true\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0
    assert result.stderr.startswith("kiln: warning: Feature flag 'features.shiny' is malformed")


def test_config_options_layer_files_in_order(cli, tmp_path):
    first = write(tmp_path / "a.yaml", "project: {name: layered}\ndebug: {enabled: sometimes}\n")
    second = write(tmp_path / "b.json", '{"debug": {"enabled": true}}')
    result = cli("-c", str(first), "-c", str(second), "check")
    assert result.exit_code == 0, result.output
    assert f"{first}, {second}" in result.stdout
    assert os.environ["KILN_CONFIG"] == f"{first}:{second}"
    assert CONFIG.get("project.name") == "layered"
    assert CONFIG.get("debug.enabled") is True


def test_config_option_makes_relative_paths_absolute(cli, tmp_path):
    write(tmp_path / "rel.yaml", "project: {name: relative}\n")
    result = cli("-c", "rel.yaml", "check")
    assert result.exit_code == 0
    assert os.environ["KILN_CONFIG"] == str(tmp_path / "rel.yaml")


# --------------------------------------------------------------------------
# serve and devserver, in process (run_simple recorded, not run)
# --------------------------------------------------------------------------


def test_serve_uses_debug_server_defaults_without_werkzeugs_debugger(cli, served, tmp_path):
    config = write(tmp_path / "c.yaml", "debug: {enabled: true}\n")
    result = cli("-c", str(config), "serve")
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8888)
    # The reloader's process: config files are not werkzeug's to watch (a broken
    # one would restart the server into an error); the serving process watches them.
    assert served["options"] == {"use_reloader": True, "threaded": True}
    assert f"kiln {__version__} serving on http://127.0.0.1:8888/" in result.stderr
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None)
    assert Path(os.environ[RESTART_FILE_VARIABLE]).name.startswith("kiln-serve-")


def test_serve_takes_the_address_from_its_options(cli, served):
    result = cli("serve", "--no-reload", "--port", "9999", "-H", "localhost")
    assert result.exit_code == 0
    assert (served["host"], served["port"]) == ("localhost", 9999)
    assert served["options"]["use_reloader"] is False
    assert "extra_files" not in served["options"]
    assert getattr(signal.getsignal(signal.SIGHUP), "__self__", None).restart is None


DEBUGGER_ON = "debug: {werkzeug: {use_debugger: true, use_evalex: true}}\n"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_serve_keeps_the_debugger_off_on_a_non_loopback_host(cli, served, tmp_path, host):
    config = write(tmp_path / "c.yaml", DEBUGGER_ON)
    result = cli("-c", str(config), "serve", "--host", host)
    assert result.exit_code == 0
    assert served["options"]["use_debugger"] is False
    assert served["options"]["use_evalex"] is False
    assert (
        f"kiln: the interactive debugger stays off on {host}: it would let anyone who "
        "reaches the port run code. Serve on 127.0.0.1 to use it." in result.stderr
    )


@pytest.mark.parametrize("host", ["127.0.0.2", "::1", "localhost"])
def test_serve_allows_the_debugger_on_any_loopback_address(cli, served, tmp_path, host):
    config = write(tmp_path / "c.yaml", DEBUGGER_ON)
    result = cli("-c", str(config), "serve", "--host", host)
    assert result.exit_code == 0
    assert served["options"]["use_debugger"] is True


def test_serve_applies_debug_werkzeug_overrides(cli, served, tmp_path):
    config = write(tmp_path / "c.yaml", "debug: {werkzeug: {threaded: false, use_reloader: false}}")
    result = cli("-c", str(config), "serve")
    assert result.exit_code == 0
    assert served["options"]["threaded"] is False
    assert served["options"]["use_reloader"] is False


def test_serve_with_a_broken_config_fails_in_one_sentence(cli, served, tmp_path):
    config = write(tmp_path / "c.yaml", "debug: [\n")
    result = cli("-c", str(config), "serve")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"kiln: error: Config file '{config}' is not valid YAML")
    assert served == {}


def test_the_config_watcher_refuses_a_restart_change_without_a_reloader(
    global_config, monkeypatch, tmp_path
):
    config = write(tmp_path / "c.yaml", "project: {name: one}\n")
    monkeypatch.setenv("KILN_CONFIG", str(config))
    global_config.config  # noqa: B018 -- the first load
    first = global_config.generation
    watcher = ConfigWatcher(restart=None)
    assert watcher.poll() is False
    write(config, "project: {name: two}\n")
    os.utime(config, ns=(1, 1))  # a change of the same size within one clock tick
    assert watcher.poll() is True
    assert (global_config.generation, global_config.setting("project.name")) == (first + 1, "two")
    write(config, "project: {name: two}\nviews: [elsewhere]\n")
    assert watcher.poll() is True
    assert global_config.last_error == (
        "Changing views needs a restart, and this server runs without its reloader "
        "(--no-reload): restart it."
    )
    config.unlink()
    assert watcher.poll() is True
    assert "does not exist" in global_config.last_error
    assert (global_config.generation, global_config.get("views")) == (first + 1, None)


def test_the_config_watcher_restarts_only_for_an_app_that_builds(
    global_config, monkeypatch, tmp_path
):
    write(tmp_path / "greeter_views.py", GREETER_VIEWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write(tmp_path / "c.yaml", "project: {name: one}\n")
    monkeypatch.setenv("KILN_CONFIG", str(config))
    restarts: list[bool] = []
    watcher = ConfigWatcher(restart=lambda: restarts.append(True))
    global_config.config  # noqa: B018 -- the first load
    write(config, "views: [missing_views_q7]\n")
    assert watcher.reload() is False
    assert "views module 'missing_views_q7' failed to import" in global_config.last_error
    write(config, "project: {name: two}\n")
    assert watcher.reload() is True
    assert restarts == []
    write(config, "views: [greeter_views]\n")
    assert watcher.reload() is True
    assert restarts == [True]


def test_devserver_refuses_without_debug_enabled(cli, served):
    result = cli("devserver")
    assert result.exit_code == 255
    assert result.stderr == DEVSERVER_REFUSAL + "\n"
    assert served == {}


def test_devserver_serves_clay_options_on_the_default_address(cli, served, tmp_path):
    config = write(tmp_path / "c.json", '{"debug": {"enabled": true}}')
    result = cli("-c", str(config), "devserver")
    assert result.exit_code == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8888)
    assert served["options"] == {"use_reloader": True, "threaded": False, "processes": 1}


def test_devserver_turns_the_debugger_off_on_all_interfaces(cli, served, tmp_path):
    config = write(
        tmp_path / "c.json",
        '{"debug": {"enabled": true, "server": {"host": "0.0.0.0"},'
        ' "werkzeug": {"use_debugger": true}}}',
    )
    result = cli("-c", str(config), "devserver")
    assert result.exit_code == 0
    assert served["host"] == "0.0.0.0"
    assert served["options"]["use_debugger"] is False
    assert "debugger stays off on 0.0.0.0" in result.stderr


# --------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------


def secrets_of(project: Path) -> list[str]:
    return re.findall(r'"([0-9a-f]{64})"', (project / "config.yaml").read_text())


def test_init_writes_a_project_with_fresh_secrets(cli, tmp_path):
    result = cli("init", "alpha")
    assert result.exit_code == 0, result.output
    assert "created alpha/config.yaml" in result.stdout
    assert "KILN_CONFIG=config.yaml kiln serve" in result.stdout
    assert "pip install -e '.[test]'" in result.stdout
    for name in ("config.yaml", "alpha/views.py", "tests/test_service.py", "pyproject.toml"):
        assert (tmp_path / "alpha" / name).is_file()
    project = tomllib.loads((tmp_path / "alpha" / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["kiln-framework"]
    assert project["optional-dependencies"] == {"test": ["pytest>=8"]}
    cli("init", "beta")
    first, second = secrets_of(tmp_path / "alpha"), secrets_of(tmp_path / "beta")
    assert len(first) == len(second) == 2
    assert len(set(first + second)) == 4


def test_init_names_the_module_after_the_name_option(cli, tmp_path):
    result = cli("init", "somewhere", "--name", "Order Desk")
    assert result.exit_code == 0
    assert (tmp_path / "somewhere" / "order_desk" / "views.py").is_file()
    assert "name: Order Desk" in (tmp_path / "somewhere" / "config.yaml").read_text()


def test_init_accepts_an_existing_empty_directory(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cli("init", "empty").exit_code == 0


def test_init_refuses_a_directory_that_is_not_empty(cli, tmp_path):
    write(tmp_path / "taken" / "notes.txt", "mine")
    result = cli("init", "taken")
    assert result.exit_code == 1
    assert "taken is not empty; choose a new directory so nothing is overwritten." in (
        result.stderr
    )
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("My Service", "my_service"),
        ("  web-api  ", "web_api"),
        ("3d printer", "service_3d_printer"),
        ("!!!", "service"),
    ],
)
def test_module_name_is_a_valid_python_identifier(name, module):
    assert _scaffold.module_name(name) == module
    assert module.isidentifier()


def test_the_scaffolded_project_passes_its_tests_check_and_serves(cli, tmp_path):
    cli("init", "shop")
    project = tmp_path / "shop"
    env = clean_env()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout
    check = subprocess.run(
        [BIN / "kiln", "-c", "config.yaml", "check"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [
        "storage (sqlite): the file 'shop.sqlite' will be created at startup.",
        "cache (sqlite): the file 'shop.sqlite' will be created at startup.",
        f"OK: the config from {project / 'config.yaml'} is valid and the app builds.",
    ]


# --------------------------------------------------------------------------
# The real development server
# --------------------------------------------------------------------------


def test_serve_answers_over_loopback_and_reloads_on_sighup(cli, tmp_path):
    cli("init", "cafe")
    project = tmp_path / "cafe"
    config = project / "config.yaml"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(BIN / "kiln"), "-c", "config.yaml", "serve", "--port", str(port), "--no-reload"]
    log = tmp_path / "serve.log"
    with running(args, cwd=project, env=clean_env(), log=log, url=f"{base}/v1/") as server:
        status, body = http_get(f"{base}/v1/")
        assert status == 200
        assert json.loads(body)["project_name"] == "cafe"
        status, body = http_get(f"{base}/v1/greetings/Ada")
        assert (status, json.loads(body)["greeting"]) == (200, "Hello, Ada!")

        config.write_text(config.read_text().replace("name: cafe", "name: bistro"))
        server.send_signal(signal.SIGHUP)
        assert wait_for(lambda: json.loads(http_get(f"{base}/v1/")[1])["project_name"] == "bistro")
        assert server.poll() is None
    assert server.returncode == 0
    assert f"kiln {__version__} serving on {base}/" in log.read_text()


def config_state(base: str) -> dict[str, Any]:
    return dict(json.loads(http_get(f"{base}/__config__")[1]))


GREETER_VIEWS = """
from kiln import app


@app.route("/greeter")
def greeter():
    return {"greeter": "hello"}
"""


def test_serve_keeps_serving_through_a_broken_config_file(tmp_path):
    secret = "f00d" * 16
    keep = f"hmac_secret: {secret}\n"
    config = write(tmp_path / "c.yaml", "project: {name: one}\n" + keep)
    write(tmp_path / "greeter_views.py", GREETER_VIEWS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(BIN / "kiln"), "-c", "c.yaml", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with running(args, cwd=tmp_path, env=clean_env(), log=log, url=f"{base}/v1/") as server:
        first = config_state(base)
        assert (first["generation"], first["last_reload_failed"]) == (1, False)

        # Saved broken: refused, the last good config keeps serving.
        config.write_text(f"project: {{name: [\nhmac_secret: {secret}: x\n")
        statuses = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            statuses.append(http_get(f"{base}/v1/")[0])
            if config_state(base)["last_reload_failed"]:
                break
            time.sleep(0.02)
        assert config_state(base)["last_reload_failed"] is True
        assert set(statuses) == {200}
        for _ in range(20):
            status, body = http_get(f"{base}/v1/")
            assert (status, json.loads(body)["project_name"]) == (200, "one")
        assert server.poll() is None
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
        assert len(errors) == 1
        assert "Config reload failed, keeping the previous config (generation 1" in errors[0]
        assert f"Config file '{config}' is not valid YAML" in errors[0]
        assert secret not in log.read_text()

        # Fixed with a change a reload applies: in place, same process.
        config.write_text("project: {name: two}\n" + keep)
        assert wait_for(lambda: config_state(base)["generation"] == 2)
        second = config_state(base)
        assert (second["last_reload_failed"], second["pid"]) == (False, first["pid"])
        assert json.loads(http_get(f"{base}/v1/")[1])["project_name"] == "two"

        # views needs a restart: the app builds, so the server restarts with them.
        config.write_text("project: {name: two}\nviews: [greeter_views]\n" + keep)
        assert wait_for(lambda: http_get(f"{base}/greeter")[0] == 200, timeout=20)
        third = config_state(base)
        assert third["pid"] != first["pid"]
        assert (third["generation"], third["last_reload_failed"]) == (1, False)
        assert " * kiln: views changed; restarting" in log.read_text()

        # views naming a module that does not import: refused, still serving.
        config.write_text("project: {name: two}\nviews: [missing_views_q7]\n" + keep)
        assert wait_for(lambda: config_state(base)["last_reload_failed"])
        assert config_state(base)["pid"] == third["pid"]
        status, body = http_get(f"{base}/greeter")
        assert (status, json.loads(body)) == (200, {"greeter": "hello"})
        assert "views module 'missing_views_q7' failed to import" in log.read_text()
        assert server.poll() is None

        # Code changed while a config file is broken: the restarted server waits
        # for the config to be fixed instead of stopping.
        config.write_text("views: [greeter_views\n")
        assert wait_for(lambda: log.read_text().count("Config reload failed") == 3)
        write(tmp_path / "greeter_views.py", GREETER_VIEWS.replace("hello", "hello again"))
        waiting = "kiln: cannot start, waiting for the config files to change: Config file"
        assert wait_for(lambda: waiting in log.read_text(), timeout=20)
        assert server.poll() is None
        config.write_text("views: [greeter_views]\n" + keep)
        assert wait_for(
            lambda: http_get(f"{base}/greeter")[1].startswith('{"greeter":"hello again')
        )

        # Stopping the serving process stops the reloader's too.
        os.kill(config_state(base)["pid"], signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def test_clay_devserver_refuses_to_run_without_debug_enabled(tmp_path):
    process = subprocess.run(
        [BIN / "clay-devserver"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 255
    assert process.stderr == DEVSERVER_REFUSAL + "\n"


# --------------------------------------------------------------------------
# kiln migrate
# --------------------------------------------------------------------------


def sqlite_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    finally:
        conn.close()


NOTHING_TO_DO = "Nothing to do: the storage, permission and cache schemas are up to date.\n"


def test_migrate_creates_every_schema_once_on_sqlite(cli, tmp_path):
    database = tmp_path / "data.sqlite"
    config = write(tmp_path / "service.yaml", f"storage: {{backend: sqlite, url: '{database}'}}\n")
    dry = cli("-c", str(config), "migrate", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "storage: would create table records\n" in dry.stdout
    assert "permission: would create table access_control_entries\n" in dry.stdout
    assert "cache: would create table cache\n" in dry.stdout
    assert dry.stdout.endswith("Dry run: nothing was written.\n")
    assert not database.exists() or sqlite_tables(database) == set()
    done = cli("-c", str(config), "migrate")
    assert done.exit_code == 0, done.output
    expected = dry.stdout.replace("would ", "").replace("Dry run: nothing was written.\n", "")
    assert done.stdout == expected
    assert {"records", "timestamps", "access_control_entries", "cache"} <= sqlite_tables(database)
    assert cli("-c", str(config), "migrate").stdout == NOTHING_TO_DO
    assert cli("-c", str(config), "migrate", "--dry-run").stdout == NOTHING_TO_DO


def test_migrate_creates_every_schema_once_on_postgresql(cli, tmp_path, postgresql_url):
    with fresh_schema(postgresql_url) as url:
        config = write(
            tmp_path / "service.yaml",
            json.dumps({"storage": {"backend": "postgresql", "url": url}}),
        )
        dry = cli("-c", str(config), "migrate", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert dry.stdout.splitlines() == [
            "storage: would create table schema_versions",
            "storage: would create function kiln_casefold",
            "storage: would create table records",
            "storage: would create index records_last_modified",
            "storage: would create table timestamps",
            "storage: would create function kiln_expect",
            "storage: would record storage schema version 2",
            "permission: would create table schema_versions",
            "permission: would create table user_principals",
            "permission: would create index user_principals_principal",
            "permission: would create table access_control_entries",
            "permission: would create index access_control_entries_principal",
            "permission: would record permission schema version 1",
            "cache: would create table schema_versions",
            "cache: would create table cache",
            "cache: would create index cache_expires_at",
            "cache: would record cache schema version 1",
            "Dry run: nothing was written.",
        ]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('schema_versions')").fetchone() == (None,)
        done = cli("-c", str(config), "migrate")
        assert done.exit_code == 0, done.output
        assert done.stdout.splitlines() == [
            line.replace("would ", "") for line in dry.stdout.splitlines()[:-1]
        ]
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
        assert sorted(rows) == [("cache", 1), ("permission", 1), ("storage", 2)]
        assert cli("-c", str(config), "migrate").stdout == NOTHING_TO_DO


INDEXED_VIEWS = """
from kiln import resource


@resource.register()
class Gauge(resource.Resource):
    schema = {
        "type": "object",
        "properties": {"kind": {"type": "string"}, "value": {"type": "number"}},
    }
    indexes = (("kind", "-value"),)
"""


def test_migrate_creates_the_indexes_the_resources_declare(cli, tmp_path, postgresql_url):
    (tmp_path / "gauges.py").write_text(INDEXED_VIEWS)
    with fresh_schema(postgresql_url) as url:
        config = write(
            tmp_path / "service.yaml",
            json.dumps({"views": ["gauges"], "storage": {"backend": "postgresql", "url": url}}),
        )
        dry = cli("-c", str(config), "migrate", "--dry-run")
        (line,) = [line for line in dry.stdout.splitlines() if "kiln_gauge" in line]
        assert line.startswith("storage: would create index kiln_gauge_")
        done = cli("-c", str(config), "migrate")
        assert done.exit_code == 0, done.output
        with psycopg.connect(url) as conn:
            (definition,) = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'kiln_gauge%'"
            ).fetchone()
        assert "((data ->> 'kind'::text)) COLLATE \"C\"" in definition
        assert "((data -> 'value'::text)) DESC" in definition
        assert "WHERE ((resource_name = 'gauge'::text) AND (NOT deleted))" in definition
        assert cli("-c", str(config), "migrate").stdout == NOTHING_TO_DO


def test_migrate_names_a_database_that_does_not_exist_and_how_to_create_it(
    cli, tmp_path, postgresql_url
):
    name = f"kiln_missing_{uuid.uuid4().hex[:8]}"
    url = make_conninfo(postgresql_url, dbname=name)
    config = write(
        tmp_path / "service.yaml", json.dumps({"storage": {"backend": "postgresql", "url": url}})
    )
    result = cli("-c", str(config), "migrate")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"kiln: error: PostgreSQL database `{name}` does not exist on "
        f"{urlsplit(postgresql_url).netloc.split('@')[-1]}: create it with `createdb {name}`, "
        "then run `kiln migrate`."
    ]


def test_migrate_leaves_a_readonly_service_alone(cli, tmp_path):
    database = tmp_path / "data.sqlite"
    config = write(
        tmp_path / "service.yaml",
        f"readonly: true\nstorage: {{backend: sqlite, url: '{database}'}}\n",
    )
    result = cli("-c", str(config), "migrate")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "kiln: readonly is true: no schema was created or changed." in result.stderr
    assert not database.exists()


def test_migrate_with_a_wrong_backend_changes_nothing(cli, tmp_path):
    database = tmp_path / "data.sqlite"
    config = write(
        tmp_path / "service.yaml", f"storage: {{url: '{database}'}}\ncache: {{backend: nope}}\n"
    )
    result = cli("-c", str(config), "migrate")
    assert result.exit_code == 1
    assert result.stderr.startswith("kiln: error: cache.backend 'nope' is not known.")
    assert not database.exists()
