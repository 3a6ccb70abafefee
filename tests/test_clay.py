from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from flask import Flask

import clay
import clay.config
import clay.database
import clay.docs
import clay.http
import clay.logger
import clay.mail
import clay.server
import clay.stats
import kiln.config
import kiln.database
import kiln.http
import kiln.logging
import kiln.mail
import kiln.stats
from kiln.cli import DEVSERVER_REFUSAL
from kiln.config import Configuration
from tests.test_cli import (
    BIN,
    clean_env,
    free_port,
    http_get,
    isolated_global_config,
    running,
    write,
)
from tests.test_wsgi import gunicorn_args

MANUAL = Path(__file__).resolve().parent / "clay_manual"

USERS = {"users": {"admins": ["synack", "bigo"]}}
FEATURES = {
    "features": {
        "new_shiny_bits": {"enabled": True},
        "new_scary_thing": {"enabled": True, "percent": 10.0},
    }
}


@pytest.fixture
def global_config(monkeypatch):
    with isolated_global_config(monkeypatch) as config:
        yield config


@pytest.fixture
def clay_config(global_config, monkeypatch, tmp_path):
    def use(tree: dict) -> Path:
        path = write(tmp_path / "clay.json", json.dumps(tree))
        monkeypatch.setenv("CLAY_CONFIG", str(path))
        return path

    return use


@pytest.fixture
def in_manual_dir(global_config, monkeypatch) -> Iterator[None]:
    monkeypatch.chdir(MANUAL)
    monkeypatch.syspath_prepend(str(MANUAL))
    yield
    sys.modules.pop("helloworld", None)


# --------------------------------------------------------------------------
# The package
# --------------------------------------------------------------------------


def test_clay_modules_are_kilns():
    assert clay.config.CONFIG is kiln.config.CONFIG
    assert clay.config.get is kiln.config.get
    assert clay.config.Configuration is Configuration
    assert clay.logger.UDPHandler is kiln.logging.UDPHandler
    assert clay.logger.TCPHandler is kiln.logging.TCPHandler
    assert clay.__all__ == ["__version__", "app", "config", "logger", "stats"]
    assert clay.server.__all__ == ["app", "application", "devserver"]
    pairs = [
        (clay.config, kiln.config),
        (clay.logger, kiln.logging),
        (clay.mail, kiln.mail),
        (clay.http, kiln.http),
        (clay.stats, kiln.stats),
        (clay.database, kiln.database),
        (clay.docs, kiln.docs),
    ]
    for shim, module in pairs:
        assert all(getattr(shim, name) is getattr(module, name) for name in shim.__all__)


def test_clay_manual_battery_names_exist():
    assert callable(clay.mail.sendmail)
    assert callable(clay.http.request)
    assert callable(clay.http.cache_control)
    assert hasattr(clay.http.Response, "_fields") or isinstance(clay.http.Response, type)
    for name in ("send", "count", "timing", "gauge", "unique_set", "wrapper"):
        assert callable(getattr(clay.stats, name))
    assert hasattr(clay.database.read, "__enter__")
    assert hasattr(clay.database.write, "__exit__")


@pytest.mark.parametrize("name", ["logger", "stats"])
def test_clays_own_submodules_are_attributes_of_the_package(name):
    assert clay.__getattr__(name) is importlib.import_module(f"clay.{name}")


def test_importing_clay_loads_no_config_and_builds_no_app():
    code = (
        "import clay, clay.config, clay.server, clay.logger, clay.mail, clay.http, clay.stats,"
        " clay.database, kiln.application as a;"
        "print('config' in clay.config.CONFIG.__dict__, a._global_app is None)"
    )
    env = clean_env(CLAY_CONFIG="/nonexistent/clay.json")
    process = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert process.stdout == "False True\n", process.stderr


def test_unknown_attributes_raise_attribute_error():
    with pytest.raises(AttributeError, match="module 'clay' has no attribute 'mail_'"):
        clay.mail_  # noqa: B018
    with pytest.raises(AttributeError, match=r"module 'clay\.server' has no attribute 'nope'"):
        clay.server.nope  # noqa: B018


def test_from_clay_import_app_gives_the_process_wide_flask_app(clay_config):
    clay_config({"project": {"name": "claysvc"}})
    from clay import app

    assert isinstance(app, Flask)
    assert app.name == "kilnapp"
    assert clay.server.app is app
    assert clay.server.application is app
    assert app.test_client().get("/v1/").json["project_name"] == "claysvc"


# --------------------------------------------------------------------------
# CLAY_CONFIG and KILN_CONFIG
# --------------------------------------------------------------------------


def test_clay_config_is_read_when_kiln_config_is_unset(tmp_path):
    path = write(tmp_path / "c.json", '{"who": "clay"}')
    config = Configuration(environ={"CLAY_CONFIG": str(path)})
    assert config.get("who") == "clay"


def test_kiln_config_wins_over_clay_config(tmp_path):
    clay_file = write(tmp_path / "clay.json", '{"who": "clay", "only_clay": 1}')
    kiln_file = write(tmp_path / "kiln.json", '{"who": "kiln"}')
    environ = {"CLAY_CONFIG": str(clay_file), "KILN_CONFIG": str(kiln_file)}
    config = Configuration(environ=environ)
    assert config.get("who") == "kiln"
    assert config.get("only_clay") is None


def test_clay_config_lists_files_merged_in_order(tmp_path):
    common = write(tmp_path / "common.conf", '{"a": {"x": 1, "y": 2}, "b": 1}')
    janky = write(tmp_path / "janky.conf", '{"a": {"z": 3}}')
    config = Configuration(environ={"CLAY_CONFIG": f"{common}:{janky}"})
    assert config.config == {"a": {"x": 1, "y": 2, "z": 3}, "b": 1}


# --------------------------------------------------------------------------
# The manual's clay.config examples, verbatim
# --------------------------------------------------------------------------


def test_manual_config_get_examples(clay_config):
    clay_config(USERS)
    from clay import config

    assert config.get("users.admins") == ["synack", "bigo"]
    assert config.get("users.players") is None
    assert config.get("dogs") is None
    assert config.get("dogs", default=True) is True


def test_manual_feature_flag_examples(clay_config):
    clay_config(FEATURES)
    from clay import config

    assert all(config.feature_flag("new_shiny_bits") for _ in range(1000))
    hits = sum(config.feature_flag("new_scary_thing") for _ in range(10_000))
    assert 700 <= hits <= 1300


def test_manual_get_logger_example(clay_config):
    clay_config({"debug": {"logging": True}})
    from clay import config

    log = config.get_logger("myservice")
    assert log.name == "myservice"
    assert log.isEnabledFor(10)


def test_debug_is_deprecated_but_still_answers(clay_config):
    clay_config({"debug": {"enabled": True}})
    from clay import config

    with pytest.warns(DeprecationWarning, match=r"get\('debug.enabled', False\)"):
        assert config.debug() is True


def test_load_reloads_on_demand_and_keeps_the_last_good_config(clay_config, caplog):
    path = clay_config({"version": 1})
    from clay import config

    assert config.get("version") == 1
    path.write_text('{"version": 2}')
    assert config.load() is True
    assert config.get("version") == 2
    path.write_text('{"version": ')
    assert config.load() is False
    assert config.get("version") == 2
    assert "keeping the previous config" in caplog.text


def set_config(config_copy: dict, key: str, value: object) -> None:
    # The manual's helper, as written in "Testing with Clay".
    val = config_copy
    keys = key.split(".")
    for k in keys[:-1]:
        val.setdefault(k, {})
        val = val[k]
    val[keys[-1]] = value


def test_manual_testing_recipe_patch_object(clay_config):
    clay_config(USERS)
    config_copy = clay.config.CONFIG.config.copy()
    with mock.patch.object(clay.config.CONFIG, "config", config_copy):
        set_config(config_copy, "toast.one_sided", True)
        set_config(config_copy, "toast.two_sided", False)
        assert clay.config.get("toast.one_sided") is True
        assert clay.config.get("toast.two_sided") is False
        assert clay.config.get("users.admins") == ["synack", "bigo"]
    assert clay.config.get("toast") is None


def test_manual_testing_recipe_patch_dict_with_clear(clay_config):
    clay_config(USERS)
    config_copy = clay.config.CONFIG.config.copy()
    set_config(config_copy, "toast.one_sided", True)
    with mock.patch.dict(clay.config.CONFIG.config, config_copy, clear=True):
        assert clay.config.get("toast.one_sided") is True
        assert clay.config.get("users.admins") == ["synack", "bigo"]
    assert clay.config.get("toast") is None


def test_patched_config_reaches_views_of_the_global_app(clay_config):
    clay_config({"owner": "ada"})
    from clay import app

    @app.route("/owner-7c1", methods=["GET"])
    def owner():
        return {"owner": clay.config.get("owner")}

    with mock.patch.dict(clay.config.CONFIG.config, {"owner": "grace"}):
        assert app.test_client().get("/owner-7c1").json == {"owner": "grace"}


# --------------------------------------------------------------------------
# The manual's sample service
# --------------------------------------------------------------------------


def test_manual_samples_in_json_and_yaml_hold_the_same_config():
    conf = Configuration(paths=[str(MANUAL / "simple-clay.conf")], environ={})
    yaml = Configuration(paths=[str(MANUAL / "simple-clay.yaml")], environ={})
    assert conf.config == yaml.config
    assert conf.config == {
        "debug": {"enabled": True, "server": {"host": "127.0.0.1", "port": 8000}},
        "views": ["helloworld"],
    }
    assert "\t" in (MANUAL / "simple-clay.conf").read_text()


def test_manual_hello_world_in_process(in_manual_dir, monkeypatch):
    monkeypatch.setenv("CLAY_CONFIG", "./simple-clay.conf")
    from clay import app

    response = app.test_client().get("/")
    assert (response.status_code, response.text) == (200, "Hello World!")
    assert app.view_functions["hello"].__doc__.strip() == "Ensures that the world is still there."


def test_clay_devserver_function_refuses_without_debug_enabled(global_config, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["clay-devserver"])
    with pytest.raises(SystemExit) as excinfo:
        clay.server.devserver()
    assert excinfo.value.code == 255
    assert capsys.readouterr().err == DEVSERVER_REFUSAL + "\n"


def test_manual_hello_world_under_clay_devserver(tmp_path):
    port = free_port()
    env = clean_env(CLAY_CONFIG="./simple-clay.conf", KILN_DEBUG__SERVER__PORT=str(port))
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "clay-devserver.log"
    with running([str(BIN / "clay-devserver")], cwd=MANUAL, env=env, log=log, url=url):
        assert http_get(url) == (200, "Hello World!")
    text = log.read_text()
    assert "Restarting with stat" in text  # Clay's reloader
    assert "Debugger is active!" not in text  # errors are JSON: no debugger, no PIN


def test_manual_hello_world_under_gunicorn(tmp_path):
    port = free_port()
    env = clean_env(CLAY_CONFIG="./simple-clay.conf")
    url = f"http://127.0.0.1:{port}/"
    args = gunicorn_args("clay.wsgi:application", port)
    with running(args, cwd=MANUAL, env=env, log=tmp_path / "gunicorn.log", url=url):
        assert http_get(url) == (200, "Hello World!")
