from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln import config as kiln_config
from kiln import create_app
from kiln.config import (
    CONFIG,
    Configuration,
    Setting,
    deep_merge,
    env_overrides,
    file_list,
    flag_warnings,
    install_reload_signal,
    lookup,
    needs_restart,
    read_file,
    validate,
)
from kiln.exceptions import ConfigError, ConfigFileError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def configuration(*paths, environ=None):
    return Configuration(paths=list(paths), environ=environ or {})


# -- reading files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.json", '{"db": {"host": "h", "port": 5}}'),
        ("a.yaml", "db:\n  host: h\n  port: 5\n"),
        ("a.yml", "db:\n  host: h\n  port: 5\n"),
        ("a.toml", '[db]\nhost = "h"\nport = 5\n'),
        ("a.conf", '{\n\t"db": {\n\t\t"host": "h",\n\t\t"port": 5\n\t}\n}'),
        ("a.JSON", '{"db": {"host": "h", "port": 5}}'),
    ],
)
def test_every_format_reads_the_same_tree(tmp_path, name, text):
    assert read_file(write(tmp_path, name, text)) == {"db": {"host": "h", "port": 5}}


@pytest.mark.parametrize("name", ["empty.json", "empty.yaml", "empty.toml", "empty.conf"])
@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_files_give_an_empty_tree(tmp_path, name, text):
    assert read_file(write(tmp_path, name, text)) == {}


def test_yaml_holding_only_null_gives_an_empty_tree(tmp_path):
    assert read_file(write(tmp_path, "a.yaml", "~\n")) == {}


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    path = write(tmp_path, "a.yaml", "x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigFileError, match="is not valid YAML"):
        read_file(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.json", "{bad", "is not valid JSON"),
        ("bad.yaml", "a: [1,\n", "is not valid YAML"),
        ("bad.toml", "a = \n", "is not valid TOML"),
        ("bad.conf", "a: 1\n", "is not valid JSON (files ending in '.conf' are parsed as JSON)"),
        ("noext", "a: 1\n", "(files ending in 'nothing' are parsed as JSON)"),
    ],
)
def test_a_file_that_does_not_parse_is_named_with_its_format(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigFileError) as info:
        read_file(path)
    assert expected in str(info.value)
    assert path in str(info.value)
    assert "\n" not in str(info.value)


def test_a_yaml_error_names_the_place_without_quoting_the_file(tmp_path):
    path = write(tmp_path, "bad.yaml", "a: 1\nhmac_secret: s3cr3t: x\n")
    with pytest.raises(ConfigFileError) as info:
        read_file(path)
    assert str(info.value) == (
        f"Config file '{path}' is not valid YAML: mapping values are not allowed here "
        "at line 2, column 20"
    )


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "list"), ('"text"', "str"), ("3", "int")])
def test_a_file_whose_top_level_is_not_a_mapping_is_refused(tmp_path, text, kind):
    with pytest.raises(ConfigFileError, match=f"mapping at its top level, not a {kind}"):
        read_file(write(tmp_path, "a.json", text))


def test_a_missing_file_says_to_check_kiln_config(tmp_path):
    with pytest.raises(ConfigFileError, match=r"does not exist\. Check KILN_CONFIG"):
        read_file(str(tmp_path / "nope.json"))


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigFileError, match="is a directory"):
        read_file(str(tmp_path))


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigFileError, match="cannot be read"):
        read_file(str(path))


# -- merging and sources ------------------------------------------------------


def test_files_merge_deeply_in_order(tmp_path):
    first = write(tmp_path, "1.json", '{"a": {"x": 1, "y": 2}, "b": 1, "l": [1, 2]}')
    second = write(tmp_path, "2.yaml", "a:\n  z: 3\n  x: 10\nl: [3]\n")
    tree, _ = configuration(first, second).build()
    assert tree == {"a": {"x": 10, "y": 2, "z": 3}, "b": 1, "l": [3]}


def test_a_scalar_replaces_a_mapping_and_a_mapping_replaces_a_scalar():
    base = {"a": {"x": 1}, "b": 2}
    deep_merge(base, {"a": 5, "b": {"y": 1}})
    assert base == {"a": 5, "b": {"y": 1}}


def test_merging_never_aliases_the_overlay():
    overlay = {"a": {"x": {"deep": 1}}}
    base: dict = {}
    deep_merge(base, overlay)
    base["a"]["x"]["deep"] = 2
    assert overlay == {"a": {"x": {"deep": 1}}}


def test_origins_name_the_file_that_set_each_key(tmp_path):
    first = write(tmp_path, "1.json", '{"a": {"x": 1, "y": 2}}')
    second = write(tmp_path, "2.json", '{"a": {"x": 3}}')
    config = configuration(first, second, environ={"KILN_A__Y": "7"})
    config.load()
    assert config.origin("a.x") == second
    assert config.origin("a.y") == "environment"
    assert config.origin("a") == first
    assert config.origin("a.x.deeper") == second
    assert config.origin("nowhere") is None


def test_replacing_a_mapping_forgets_the_origins_below_it(tmp_path):
    first = write(tmp_path, "1.json", '{"a": {"x": 1}}')
    second = write(tmp_path, "2.json", '{"a": 3}')
    config = configuration(first, second)
    config.load()
    assert config.origins == {"a": second}


def test_environment_overrides_beat_files(tmp_path):
    path = write(tmp_path, "a.json", '{"debug": {"enabled": false}, "project": {"name": "x"}}')
    config = configuration(
        path,
        environ={
            "KILN_DEBUG__ENABLED": "true",
            "KILN_PROJECT__NAME": "from env",
            "KILN_PAGINATE__MAX_LIMIT": "50",
            "KILN_VIEWS": '["a", "b"]',
        },
    )
    assert config.get("debug.enabled") is True
    assert config.get("project.name") == "from env"
    assert config.get("paginate.max_limit") == 50
    assert config.get("views") == ["a", "b"]


def test_environment_overrides_apply_deeper_keys_last():
    tree = env_overrides({"KILN_DEBUG": "1", "KILN_DEBUG__ENABLED": "true"})
    assert tree == {"debug": {"enabled": True}}


def test_environment_ignores_other_variables_and_file_lists(caplog):
    tree = env_overrides(
        {"KILN_CONFIG": "a.json", "CLAY_CONFIG": "b.json", "HOME": "/root", "KILN_A____B": "1"}
    )
    assert tree == {}
    assert "KILN_A____B" in caplog.text


def test_kiln_config_wins_over_clay_config_and_entries_are_expanded(tmp_path):
    environ = {"KILN_CONFIG": "::$BASE/a.json: ~/b.yaml", "BASE": str(tmp_path)}
    os.environ["BASE"] = str(tmp_path)
    try:
        paths = file_list({**environ, "CLAY_CONFIG": "clay.json"})
    finally:
        del os.environ["BASE"]
    assert paths == [str(tmp_path / "a.json"), os.path.expanduser("~/b.yaml")]


def test_clay_config_is_read_when_kiln_config_is_unset(tmp_path):
    assert file_list({"CLAY_CONFIG": "x.json:y.json"}) == [
        os.path.abspath("x.json"),
        os.path.abspath("y.json"),
    ]
    assert file_list({}) == []


# -- get ----------------------------------------------------------------------

TREE = {"users": {"admins": ["synack", "bigo"]}, "none": None, "n": 0, "list": [{"a": 1}]}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("users.admins", ["synack", "bigo"]),
        ("users.admins.1", "bigo"),
        ("list.0.a", 1),
        ("n", 0),
        ("users.players", None),
        ("dogs", None),
        ("none.x", None),
        ("n.x", None),
        ("users.admins.9", None),
        ("users.admins.x", None),
        ("", None),
    ],
)
def test_get_walks_mappings_and_lists_and_never_raises(key, expected):
    assert Configuration.from_mapping(TREE).get(key) == expected


def test_get_returns_the_default_for_missing_keys():
    config = Configuration.from_mapping(TREE)
    assert config.get("dogs", default=True) is True
    assert config.get("none", default=1) is None


@given(st.text())
def test_lookup_never_raises_on_any_key(key):
    lookup(TREE, key)


def test_setting_falls_back_to_the_registered_default_and_copies_it():
    config = Configuration.from_mapping({})
    assert config.setting("debug.server.port") == 8888
    config.setting("flask.init")["import_name"] = "mutated"
    assert config.setting("flask.init") == {"import_name": "kilnapp"}


def test_set_creates_mappings_without_touching_the_tree_readers_hold():
    config = Configuration.from_mapping({"a": 1})
    held = config.config
    config.set("b.c.d", 2)
    config.set("a.x", 3)
    assert config.get("b.c.d") == 2
    assert config.get("a.x") == 3
    assert held == {"a": 1}


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"debug": {"enabled": "yes"}}, "'debug.enabled' must be a boolean, got \"yes\" (str)"),
        ({"debug": {"server": {"port": True}}}, "'debug.server.port' must be an integer"),
        ({"debug": {"server": {"port": "80"}}}, "'debug.server.port' must be an integer"),
        ({"views": "app.views"}, "'views' must be a list"),
        ({"project": {"name": None}}, "'project.name' must not be null; use a string"),
        ({"logging_format": "xml"}, "must be one of 'text', 'json', got 'xml'"),
        ({"heartbeat": {"timeout_seconds": "1"}}, "must be an integer or a number"),
    ],
)
def test_wrong_types_for_known_keys_are_sentences(tree, message):
    problems = validate(tree)
    assert len(problems) == 1
    assert message in problems[0]


def test_known_keys_accept_their_types_and_unknown_keys_pass():
    tree = {
        "debug": {"enabled": True, "server": {"port": 80}},
        "heartbeat": {"timeout_seconds": 1.5},
        "http_api_version": None,
        "my_app": {"anything": [1, "x"]},
    }
    assert validate(tree) == []


def test_a_wrong_type_names_the_file_it_came_from(tmp_path):
    path = write(tmp_path, "bad.yaml", "debug:\n  enabled: maybe\n")
    with pytest.raises(ConfigError) as info:
        configuration(path).load()
    assert str(info.value) == (
        f"Config key 'debug.enabled' (set in {path}) must be a boolean, got \"maybe\" (str)."
    )


def test_a_wrong_type_from_the_environment_says_so():
    with pytest.raises(ConfigError, match=r"\(set in environment\)"):
        configuration(environ={"KILN_DEBUG__ENABLED": '"on"'}).load()


def test_a_setting_type_without_a_friendly_name_is_named_by_its_class():
    setting = Setting("x", (tuple,), (), "a tuple")
    assert setting.check([1]) == "must be tuple, got [1] (list)"


# -- loading and reloading ----------------------------------------------------


def test_config_loads_lazily_on_first_use(tmp_path):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    assert "config" not in vars(config)
    assert config.get("a") == 1
    assert config.last_updated is not None
    assert config.sources == [path]


def test_unknown_attributes_still_raise():
    with pytest.raises(AttributeError):
        Configuration().nothing  # noqa: B018


def test_a_broken_file_at_first_load_raises_a_config_error(tmp_path):
    config = configuration(write(tmp_path, "a.json", "{"))
    with pytest.raises(ConfigFileError):
        config.get("a")


def test_a_broken_reload_keeps_the_last_good_config(tmp_path, caplog):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    assert config.get("a") == 1
    write(tmp_path, "a.json", "{broken")
    assert config.load() is False
    assert config.get("a") == 1
    assert "keeping the previous config" in caplog.text
    assert path in config.last_error
    write(tmp_path, "a.json", '{"a": 2}')
    assert config.load() is True
    assert config.get("a") == 2
    assert config.last_error is None


def test_a_strict_reload_raises(tmp_path):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    config.load()
    write(tmp_path, "a.json", '{"debug": {"enabled": 1}}')
    with pytest.raises(ConfigError):
        config.load(strict=True)
    assert config.get("a") == 1


def test_reload_listeners_run_after_a_good_load_and_a_failing_one_is_logged(tmp_path, caplog):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    seen = []

    @config.add_listener
    def broken(_config):
        raise RuntimeError("boom")

    config.add_listener(lambda c: seen.append(c.get("a")))
    config.load()
    write(tmp_path, "a.json", '{"a": 2}')
    config.load()
    write(tmp_path, "a.json", "{")
    config.load()
    assert seen == [1, 2]
    assert "listener" in caplog.text
    assert "boom" in caplog.text
    config.remove_listener(broken)
    config.remove_listener(broken)
    assert broken not in config._listeners


def test_a_thousand_reloads_under_concurrent_reads_never_show_a_partial_tree(tmp_path):
    path = write(tmp_path, "a.json", '{"a": {"x": 0, "y": 0}, "b": 0}')
    config = configuration(path)
    config.load()
    stop = threading.Event()
    failures: list[str] = []
    reads = Counter()

    def reader():
        while not stop.is_set():
            tree = config.config
            x, y, b = lookup(tree, "a.x"), lookup(tree, "a.y"), lookup(tree, "b")
            reads["n"] += 1
            if not (x == y == b) or config.get("missing", "d") != "d":
                failures.append(f"{x} {y} {b}")
            # Hand the GIL back: the reloads go on (spinning readers slowed them
            # down fifteenfold) and the reads still land between their steps.
            time.sleep(0)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(1, 1001):
            write(tmp_path, "a.json", f'{{"a": {{"x": {i}, "y": {i}}}, "b": {i}}}')
            assert config.load() is True
            if i % 100 == 0:
                write(tmp_path, "a.json", "{broken")
                assert config.load() is False
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert reads["n"] > 0
    assert config.get("b") == 1000


def test_sighup_reloads_the_config(tmp_path):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    config.load()
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert install_reload_signal(config) is True
        write(tmp_path, "a.json", '{"a": 2}')
        os.kill(os.getpid(), signal.SIGHUP)
        assert config.get("a") == 2
        write(tmp_path, "a.json", "{")
        os.kill(os.getpid(), signal.SIGHUP)
        assert config.get("a") == 2
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sighup_cannot_be_installed_off_the_main_thread():
    result = []
    thread = threading.Thread(target=lambda: result.append(install_reload_signal()))
    thread.start()
    thread.join()
    assert result == [False]


def test_importing_kiln_installs_no_signal_handler():
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.SIG_IGN, None)


# -- feature flags ------------------------------------------------------------

FLAGS = {
    "features": {
        "new_shiny_bits": {"enabled": True},
        "off": {"enabled": False},
        "gated": {"enabled": False, "percent": 100},
        "ten": {"enabled": True, "percent": 10.0},
        "percent_only": {"percent": 30},
        "never": {"enabled": True, "percent": 0},
        "always": {"enabled": True, "percent": 100},
        "example": {"user_prejudice": {"enabled": True}},
        "empty": {},
        "bad_shape": True,
        "bad_enabled": {"enabled": "yes"},
        "bad_percent": {"percent": "10"},
        "big_percent": {"percent": 101},
        "bool_percent": {"percent": True},
    }
}


@pytest.fixture
def flags():
    return Configuration.from_mapping(FLAGS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("new_shiny_bits", True),
        ("off", False),
        ("gated", False),
        ("never", False),
        ("always", True),
        ("example.user_prejudice", True),
        ("missing", False),
        ("empty", False),
    ],
)
def test_feature_flags_without_chance(flags, name, expected):
    assert all(flags.feature_flag(name) is expected for _ in range(50))


def test_enabled_false_gates_percent(flags):
    assert not any(flags.feature_flag("gated", key=i) for i in range(1000))


def test_percent_draws_afresh_on_every_call(flags):
    hits = sum(flags.feature_flag("ten") for _ in range(20_000))
    assert 1500 < hits < 2500


def test_a_flag_with_only_percent_is_enabled(flags):
    hits = sum(flags.feature_flag("percent_only") for _ in range(20_000))
    assert 5000 < hits < 7000


def test_a_key_makes_the_answer_sticky_and_the_share_right(flags):
    first = {user: flags.feature_flag("ten", key=user) for user in range(20_000)}
    again = {user: flags.feature_flag("ten", key=user) for user in range(20_000)}
    assert first == again
    assert 1600 < sum(first.values()) < 2400


def test_sticky_buckets_differ_between_flags():
    config = Configuration.from_mapping({"features": {"a": {"percent": 50}, "b": {"percent": 50}}})
    a = [config.feature_flag("a", key=i) for i in range(2000)]
    b = [config.feature_flag("b", key=i) for i in range(2000)]
    assert a != b


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("bad_shape", "a flag must be a mapping"),
        ("bad_enabled", "'enabled' must be true or false"),
        ("bad_percent", "'percent' must be a number"),
        ("big_percent", "'percent' must be from 0 to 100"),
        ("bool_percent", "'percent' must be a number"),
    ],
)
def test_a_malformed_flag_is_off_and_logged_once(flags, caplog, name, problem):
    assert [flags.feature_flag(name) for _ in range(3)] == [False] * 3
    messages = [r.getMessage() for r in caplog.records if "Feature flag" in r.getMessage()]
    assert len(messages) == 1
    assert problem in messages[0]


def test_flag_warnings_list_every_malformed_flag_including_nested_ones():
    warnings = flag_warnings({"features": {**FLAGS["features"], "ns": {"inner": {"enabled": 3}}}})
    named = sorted(w.split("'")[1] for w in warnings)
    assert named == [
        "features.bad_enabled",
        "features.bad_percent",
        "features.bad_shape",
        "features.big_percent",
        "features.bool_percent",
        "features.ns.inner",
    ]
    assert flag_warnings({"features": "nope"}) == []


# -- module API ---------------------------------------------------------------


def test_module_functions_read_the_process_config(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"users": {"admins": ["a"]}, **FLAGS})
    assert kiln_config.get("users.admins") == ["a"]
    assert kiln_config.get("dogs", default=True) is True
    assert kiln_config.feature_flag("new_shiny_bits") is True


def test_module_functions_follow_the_app_serving_the_request(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"who": "process"})
    app = create_app({"who": "app", **FLAGS}, configure_logging=False)
    with app.app_context():
        assert kiln_config.get("who") == "app"
        assert kiln_config.feature_flag("always") is True
        assert kiln_config.current() is app.extensions["kiln"].config
    assert kiln_config.get("who") == "process"


def test_debug_is_deprecated_but_answers(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"debug": {"enabled": True}})
    with pytest.deprecated_call(match="debug.enabled"):
        assert kiln_config.debug() is True


def test_load_reloads_the_process_config(monkeypatch, tmp_path):
    path = write(tmp_path, "a.json", '{"a": 1}')
    monkeypatch.setenv("KILN_CONFIG", path)
    monkeypatch.setattr(CONFIG, "config", {})
    assert kiln_config.load() is True
    assert kiln_config.get("a") == 1


def test_get_logger_levels_follow_debug_logging_and_reloads(tmp_path):
    path = write(tmp_path, "a.json", '{"debug": {"logging": true}}')
    config = configuration(path)
    log = config.get_logger("kiln.tests.levels")
    assert log.level == logging.DEBUG
    write(tmp_path, "a.json", "{}")
    config.load()
    assert log.level == logging.INFO
    assert config.get_logger("kiln.tests.levels") is log


def test_module_get_logger_uses_the_current_config(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"debug": {"logging": True}})
    assert kiln_config.get_logger("kiln.tests.module").level == logging.DEBUG


def test_environment_overrides_share_their_parents():
    tree = env_overrides({"KILN_A__B": "1", "KILN_A__C": "2", "KILN_A__D__E": "3"})
    assert tree == {"a": {"b": 1, "c": 2, "d": {"e": 3}}}


def test_setting_returns_the_configured_value():
    assert (
        Configuration.from_mapping({"debug": {"server": {"port": 80}}}).setting("debug.server.port")
        == 80
    )


def test_set_reuses_existing_mappings():
    config = Configuration.from_mapping({})
    config.set("b.c.d", 1)
    config.set("b.c.e", 2)
    assert config.get("b") == {"c": {"d": 1, "e": 2}}


def test_a_plain_flask_app_context_reads_the_process_config(monkeypatch):
    import flask

    monkeypatch.setattr(CONFIG, "config", {"who": "process"})
    with flask.Flask("plain").app_context():
        assert kiln_config.get("who") == "process"


def test_a_reader_waiting_for_the_first_load_uses_the_tree_loaded_meanwhile():
    config = configuration(write_nothing := "/nonexistent/never-read.json")
    seen = []
    with config._lock:
        thread = threading.Thread(target=lambda: seen.append(config.config))
        thread.start()
        thread.join(0.1)  # the reader now waits for the lock
        config.config = {"loaded": "meanwhile"}
    thread.join()
    assert seen == [{"loaded": "meanwhile"}]
    assert write_nothing not in config.sources


def test_known_settings_are_sorted_and_documented():
    keys = [setting.key for setting in kiln_config.known_settings()]
    assert keys == sorted(keys)
    assert "debug.enabled" in keys
    assert all(setting.doc for setting in kiln_config.known_settings())


def test_settings_of_every_component_are_validated_at_load():
    with pytest.raises(ConfigError, match=r"Config key 'smtp\.port'"):
        Configuration.from_mapping({"smtp": {"port": "twenty-five"}}).load()
    keys = {setting.key for setting in kiln_config.known_settings()}
    assert {"smtp.host", "statsd.host"} <= keys


def test_a_check_over_several_keys_runs_after_each_keys_own_and_once(monkeypatch):
    monkeypatch.setattr(kiln_config, "CHECKS", list(kiln_config.CHECKS))

    def both_or_neither(tree, origins):
        has = [key for key in ("a.x", "a.y") if lookup(tree, key) is not None]
        return ["Config keys 'a.x' and 'a.y' go together."] if len(has) == 1 else []

    assert kiln_config.register_check(both_or_neither) is both_or_neither
    kiln_config.register_check(both_or_neither)
    assert validate({"a": {"x": 1}}) == ["Config keys 'a.x' and 'a.y' go together."]
    assert validate({"a": {"x": 1, "y": 2}}) == []
    # A key's own problem comes alone: checks may assume well-typed keys.
    assert validate({"a": {"x": 1}, "debug": {"enabled": "no"}}) == [
        """Config key 'debug.enabled' must be a boolean, got "no" (str)."""
    ]


def test_unknown_keys_of_kilns_sections_are_logged_at_every_load(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text("storage: {backnd: memory}\nbakery: {flavour: rye}\n")
    configuration = Configuration(paths=[str(path)], environ={})
    with caplog.at_level(logging.WARNING, logger="kiln.config"):
        configuration.load()
        configuration.load()
        configuration.load(warn=False)
    assert [r.getMessage() for r in caplog.records if r.name == "kiln.config"] == [
        f"Config key 'storage.backnd' (set in {path}) is not a kiln setting: "
        "did you mean 'storage.backend'?",
    ] * 2


def test_a_section_of_kilns_that_is_not_a_mapping_is_an_error_unless_users_share_it():
    assert validate({"debug": {"server": 8000}}) == [
        "Config key 'debug.server' must be a mapping of settings ('debug.server.host', ...), "
        "not the int 8000."
    ]
    assert validate({"testing": "on", "auth": {"bearer": 1}}) == []


def test_each_load_is_a_generation_and_a_failed_reload_is_remembered(tmp_path, caplog):
    caplog.set_level(logging.INFO, "kiln.config")
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    assert config.generation == 0
    assert config.get("a") == 1
    assert (config.generation, config.last_failed) == (1, None)
    write(tmp_path, "a.json", "{broken")
    assert config.load() is False
    assert config.generation == 1
    assert config.last_failed is not None
    assert f"keeping the previous config (generation 1, process {os.getpid()})" in caplog.text
    write(tmp_path, "a.json", '{"a": 2}')
    assert config.load() is True
    assert (config.generation, config.last_failed) == (2, None)
    assert f"Config generation 2 (process {os.getpid()}) loaded from {path}" in caplog.text


def test_a_load_check_refuses_a_valid_tree(tmp_path):
    path = write(tmp_path, "a.json", '{"a": 1}')
    config = configuration(path)
    config.load()
    write(tmp_path, "a.json", '{"a": 2}')
    seen = []
    assert config.load(check=lambda tree: seen.append(tree) or "Not this one.") is False
    assert (config.get("a"), config.last_error, seen) == (1, "Not this one.", [{"a": 2}])
    assert config.load(check=lambda tree: None) is True
    assert config.get("a") == 2


def test_needs_restart_names_the_changed_settings_a_running_app_cannot_follow():
    old = {"views": ["a"], "project": {"name": "x"}, "mine": 1, "storage": {"pool_size": 3}}
    assert needs_restart(old, copy.deepcopy(old)) == []
    new = {"views": ["a", "b"], "project": {"name": "y"}, "mine": 2, "storage": {}}
    assert needs_restart(old, new) == ["storage.pool_size", "views"]
