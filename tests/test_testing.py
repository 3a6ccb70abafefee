from __future__ import annotations

import base64
import contextlib
import shutil
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

import kiln.database
import kiln.testing
from kiln.exceptions import ConfigFileError
from kiln.testing import basic_auth_header, insert_rows, read_fixture_file, set_key

pytest_plugins = ["pytester"]

SAMPLE_PROJECT = Path(__file__).parent / "sample_project"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The entry point would register the plugin a second time.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("KILN_CONFIG", raising=False)
    shutil.copytree(SAMPLE_PROJECT, pytester.path, dirs_exist_ok=True)
    yield pytester
    kiln.database.DATABASE.close()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The module object, as the entry point would register it (``-p kiln.testing``
    # would re-import it for assertion rewriting, which it cannot be once imported).
    return pytester.runpytest_inprocess(*args, plugins=[kiln.testing])


def test_the_sample_project_passes_with_the_plugin(project: pytest.Pytester) -> None:
    result = run(project)
    result.assert_outcomes(passed=19)


def test_without_an_ini_config_tests_start_from_the_process_config(
    project: pytest.Pytester,
) -> None:
    (project.path / "pytest.ini").write_text("[pytest]\npython_files = sample_*.py\n")
    project.makepyfile(
        sample_plain="""
        from kiln import config

        def test_process_config(kiln_config):
            assert config.get("project.name") is None
            assert kiln_config == config.CONFIG.config
        """
    )
    (project.path / "conftest.py").unlink()
    result = run(project, "sample_plain.py")
    result.assert_outcomes(passed=1)


def test_fixture_mistakes_are_reported_as_sentences(project: pytest.Pytester) -> None:
    project.makepyfile(
        sample_mistakes="""
        import pytest

        def test_unknown_fixture(load_fixtures):
            load_fixtures("nope")

        def test_fixture_without_a_loader(load_fixtures, set_config, tmp_path):
            path = tmp_path / "f.yaml"
            path.write_text("odd: {rows: []}\\nbad: {table: users, rows: 3}\\n")
            set_config("testing.fixture_filepath", str(path))
            with pytest.raises(Exception, match="must have one of the keys table"):
                load_fixtures("odd")
            load_fixtures("bad")

        def test_no_fixture_file(load_fixtures, set_config):
            set_config("testing.fixture_filepath", None)
            load_fixtures("alice")
        """
    )
    result = run(project, "sample_mistakes.py")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*Fixture 'nope' is not defined in *fixtures.yaml: add a mapping like*",
            "*Fixture 'bad': 'rows' must be a list of mappings.*",
            "*testing.fixture_filepath is not set: point it at the YAML file*",
        ]
    )


def test_basic_auth_header_encodes_user_and_password() -> None:
    header = basic_auth_header("alice", "s3cret:x")
    scheme, token = header["Authorization"].split()
    assert scheme == "Basic"
    assert base64.b64decode(token) == b"alice:s3cret:x"


def test_set_key_creates_and_replaces_intermediate_mappings() -> None:
    tree: dict[str, Any] = {"a": 1}
    set_key(tree, "a.b.c", 2)
    set_key(tree, "d", 3)
    assert tree == {"a": {"b": {"c": 2}}, "d": 3}


@pytest.mark.parametrize("paramstyle", ["qmark", "format", "numeric", "named"])
def test_insert_rows_follows_the_paramstyle(paramstyle: str) -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (a, b)")
        if paramstyle == "format":
            # sqlite3 has no %s placeholders: check the SQL it is given.
            statements: list[str] = []
            conn.set_trace_callback(statements.append)
            with pytest.raises(sqlite3.OperationalError):
                insert_rows(conn, "t", [{"a": 1, "b": "x"}], paramstyle)
            assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
            return
        with warnings.catch_warnings():
            # sqlite3 (qmark) stands in for a numeric-paramstyle driver: it still binds
            # ":1" to a sequence, but warns about it since Python 3.12.
            named = r"Binding \d+ \(':\d+'\) is a named parameter"
            warnings.filterwarnings("ignore", named, DeprecationWarning)
            insert_rows(conn, "t", [{"a": 1, "b": "x"}, {"b": "y"}], paramstyle)
        assert conn.execute("SELECT a, b FROM t ORDER BY b").fetchall() == [(1, "x"), (None, "y")]


@pytest.mark.parametrize(
    ("table", "row", "paramstyle", "message"),
    [
        ("t; DROP TABLE t", {"a": 1}, "qmark", "must be a plain SQL name"),
        ("t", {"a b": 1}, "qmark", "Fixture column 'a b'"),
        ("t", {"a": 1}, "shouty", "paramstyle 'shouty' is not supported"),
    ],
)
def test_insert_rows_refuses_what_it_cannot_insert_safely(
    table: str, row: dict[str, Any], paramstyle: str, message: str
) -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (a)")
        with pytest.raises(ValueError, match=message):
            insert_rows(conn, table, [row], paramstyle)


def test_read_fixture_file_caches_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: {table: t}\n")
    first = read_fixture_file(str(path))
    assert read_fixture_file(str(path)) is first
    with pytest.raises(ConfigFileError, match="does not exist"):
        read_fixture_file(str(tmp_path / "missing.yaml"))
