from __future__ import annotations

import sqlite3

import pytest

from kiln._sqlite import SQLiteDatabase
from kiln.config import Configuration
from kiln.exceptions import BackendError, ConfigError
from kiln.permission import load_permission
from kiln.permission.sqlite import SQLitePermission, glob_escape, prefix_range
from kiln.permission.testing import PermissionContract
from kiln.storage import load_storage


class TestSQLitePermission(PermissionContract):
    @pytest.fixture
    def backend(self, sqlite_database):
        return SQLitePermission(sqlite_database)

    @pytest.fixture
    def broken_backend(self, broken_sqlite_database):
        return SQLitePermission(broken_sqlite_database)


class TestInMemorySQLitePermission(PermissionContract):
    @pytest.fixture
    def backend(self):
        return SQLitePermission(SQLiteDatabase(":memory:"))


@pytest.fixture
def permission(sqlite_database):
    permission = SQLitePermission(sqlite_database)
    permission.initialize_schema()
    return permission


def test_initialize_schema_reports_its_steps_and_dry_run_writes_nothing(tmp_path):
    permission = SQLitePermission(SQLiteDatabase(str(tmp_path / "kiln.sqlite")))
    steps = permission.initialize_schema(dry_run=True)
    assert "create table access_control_entries" in steps
    conn = permission.database.connection()
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    assert permission.initialize_schema() == steps
    assert permission.initialize_schema() == []


def test_the_permissions_share_the_storage_file_and_its_unit_of_work(tmp_path):
    config = Configuration.from_mapping({"storage": {"url": str(tmp_path / "one.sqlite")}})
    storage = load_storage(config)
    permission = load_permission(config)
    assert isinstance(permission, SQLitePermission)
    assert permission.database is storage.database
    storage.initialize_schema()
    permission.initialize_schema()

    def fail():
        with storage.transaction():
            storage.create("r", "", {"id": "a"})
            permission.add_principal_to_ace("/r/a", "write", "alice")
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert storage.list_all("r", "") == []
    assert permission.object_permissions("/r/a") == {}
    with permission.transaction():
        storage.create("r", "", {"id": "a"})
        permission.add_principal_to_ace("/r/a", "write", "alice")
    assert permission.check_permission("/r/a", "write", ["alice"])
    storage.close()


def test_load_permission_reads_its_own_url(tmp_path):
    config = Configuration.from_mapping(
        {
            "storage": {"url": str(tmp_path / "a.sqlite")},
            "permission": {"url": str(tmp_path / "b.sqlite")},
        }
    )
    permission = load_permission(config)
    assert isinstance(permission, SQLitePermission)
    assert permission.database.path.endswith("b.sqlite")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sqlit", r"permission\.backend 'sqlit' is not known\. Did you mean 'sqlite'\?"),
    ],
)
def test_load_permission_explains_an_unknown_backend(name, message):
    config = Configuration.from_mapping({"permission": {"backend": name}})
    with pytest.raises(ConfigError, match=message):
        load_permission(config)


def test_a_string_path_opens_the_shared_database(tmp_path):
    path = str(tmp_path / "kiln.sqlite")
    assert SQLitePermission(path).database is SQLiteDatabase.shared(path)


def test_a_locked_database_fails_with_backend_error(tmp_path):
    permission = SQLitePermission(SQLiteDatabase(str(tmp_path / "k.sqlite"), busy_timeout=0.1))
    permission.initialize_schema()
    blocker = sqlite3.connect(str(tmp_path / "k.sqlite"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendError):
            permission.add_principal_to_ace("/a", "read", "alice")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    permission.add_principal_to_ace("/a", "read", "alice")
    assert permission.check_permission("/a", "read", ["alice"])


def test_a_permission_backend_without_schema_fails_with_backend_error(tmp_path):
    permission = SQLitePermission(SQLiteDatabase(str(tmp_path / "k.sqlite")))
    with pytest.raises(BackendError):
        permission.user_principals("alice")
    assert permission.heartbeat() is False


def test_accessible_objects_use_the_principal_index(permission):
    conn = permission.database.connection()
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT DISTINCT object_id FROM access_control_entries"
        " WHERE principal IN (?, ?) AND permission = ? AND object_id >= ? AND object_id < ?",
        ["a", "b", "read", "/b/", "/b0"],
    ).fetchall()
    assert any("access_control_entries_principal" in row[-1] for row in plan)


def test_glob_escape_makes_glob_metacharacters_literal():
    assert glob_escape("/a/[x]?*") == "/a/[[]x][?]*"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("/b/", ("/b/", "/b0")),
        ("", ("", None)),
        ("\U0010ffff", ("\U0010ffff", None)),
        ("/a\U0010ffff", ("/a\U0010ffff", "/b")),
        ("/\ud7ff", ("/\ud7ff", "/\ue000")),
    ],
)
def test_prefix_range_bounds_every_string_with_the_prefix(prefix, expected):
    assert prefix_range(prefix) == expected
