from __future__ import annotations

import sqlite3

import pytest

from kiln._postgresql import PostgreSQLDatabase
from kiln._sqlite import SQLiteDatabase
from kiln.cache.sqlite import SQLiteCache
from kiln.exceptions import StartupError
from kiln.migrations import Migration, folder, load_migrations, parse_migration, shipped
from kiln.permission.sqlite import SQLitePermission
from kiln.storage.postgresql import migrations as storage_migrations
from kiln.storage.sqlite import SQLiteStorage
from kiln.storage.testing import run_threads
from tests.pgschema import fresh_schema

FIRST = """-- The first version.

-- step: create table things
CREATE TABLE things (
    n INTEGER NOT NULL  -- a comment inside a statement stays in it
);

-- step: insert the first thing
INSERT INTO things (n) VALUES (1);
"""
SECOND = """-- step: add column label
ALTER TABLE things ADD COLUMN label TEXT NOT NULL DEFAULT 'one';
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def open_database(request, tmp_path):
    """Opens new database objects on one fresh, empty database of the engine."""
    opened = []
    if request.param == "sqlite":
        path = str(tmp_path / "kiln.sqlite")

        def open_one():
            opened.append(SQLiteDatabase(path))
            return opened[-1]

        yield open_one
    else:
        with fresh_schema(request.getfixturevalue("postgresql_url")) as url:

            def open_one():
                opened.append(PostgreSQLDatabase(url))
                return opened[-1]

            yield open_one
    for database in opened:
        database.close()


@pytest.fixture
def database(open_database):
    return open_database()


def rows(database, sql):
    with database.transaction() as conn:
        return [tuple(row) for row in database.execute(conn, sql).fetchall()]


def columns(database, table):
    if isinstance(database, SQLiteDatabase):
        return [row[1] for row in rows(database, f"PRAGMA table_info({table})")]
    return [
        row[0]
        for row in rows(
            database,
            "SELECT column_name FROM information_schema.columns"
            f" WHERE table_name = '{table}' ORDER BY ordinal_position",
        )
    ]


def test_the_shipped_migrations_are_numbered_files(tmp_path):
    storage = storage_migrations(icu=True)
    assert [m.number for m in storage] == [1, 2]
    assert [d for d, _ in storage[0].steps] == [
        "create function kiln_casefold",
        "create table records",
        "create index records_last_modified",
        "create table timestamps",
    ]
    assert [d for d, _ in storage[1].steps] == ["create function kiln_expect"]
    assert shipped("postgresql", "permission")[0].steps[0][0] == "create table user_principals"
    for engine in ("postgresql", "sqlite"):
        files = folder(engine, "cache").iterdir()
        assert [entry.name for entry in files if entry.name.endswith(".sql")] == ["0001_cache.sql"]
        for component in ("storage", "permission", "cache"):
            expected = [1, 2] if (engine, component) == ("postgresql", "storage") else [1]
            assert [m.number for m in shipped(engine, component)] == expected


def test_a_database_is_upgraded_by_the_migrations_above_its_version(database, tmp_path):
    (tmp_path / "0001_things.sql").write_text(FIRST)
    first = load_migrations(tmp_path)
    assert database.install_schema("things", first) == [
        "create table schema_versions",
        "create table things",
        "insert the first thing",
        "record things schema version 1",
    ]
    (tmp_path / "0002_label.sql").write_text(SECOND)
    both = load_migrations(tmp_path)
    planned = database.install_schema("things", both, dry_run=True)
    assert planned == ["add column label", "record things schema version 2"]
    assert columns(database, "things") == ["n"]
    assert database.install_schema("things", both) == planned
    assert rows(database, "SELECT n, label FROM things") == [(1, "one")]
    assert database.install_schema("things", both) == []
    with database.transaction() as conn:
        assert database.installed_version(conn, "things") == 2


def test_processes_installing_at_once_take_turns(open_database, tmp_path):
    (tmp_path / "0001_things.sql").write_text(FIRST)
    (tmp_path / "0002_label.sql").write_text(SECOND)
    migrations = load_migrations(tmp_path)
    databases = [open_database() for _ in range(4)]
    results = run_threads(4, lambda i: databases[i].install_schema("things", migrations))
    assert sorted(map(len, results)) == [0, 0, 0, 5]
    assert rows(databases[0], "SELECT n, label FROM things") == [(1, "one")]


def test_an_older_kiln_refuses_a_newer_database(database, tmp_path):
    (tmp_path / "0001_things.sql").write_text(FIRST)
    (tmp_path / "0002_label.sql").write_text(SECOND)
    database.install_schema("things", load_migrations(tmp_path))
    with pytest.raises(StartupError, match="version 2, newer than this kiln knows \\(1\\)"):
        database.install_schema("things", load_migrations(tmp_path)[:1])


@pytest.mark.parametrize(
    "names",
    [["0001_a.sql", "0003_c.sql"], ["1_a.sql"], ["0001_A-b.sql"], ["0002_b.sql"]],
)
def test_misnamed_or_gapped_migration_files_fail_at_startup(tmp_path, names):
    for name in names:
        (tmp_path / name).write_text(SECOND)
    with pytest.raises(StartupError, match="numbered from 1 without gaps"):
        load_migrations(tmp_path)


def test_files_that_are_not_sql_are_ignored_and_a_prelude_comes_first(tmp_path):
    (tmp_path / "README.txt").write_text("not a migration")
    (tmp_path / "0001_label.sql").write_text(SECOND)
    (migration,) = load_migrations(tmp_path, {1: [("first", "SELECT 1")]})
    assert migration == Migration(
        1,
        (
            ("first", "SELECT 1"),
            ("add column label", "ALTER TABLE things ADD COLUMN label TEXT NOT NULL DEFAULT 'one'"),
        ),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CREATE TABLE t (n int);", "put a '-- step: <description>' line"),
        ("-- step: a\n-- step: b\nSELECT 1;", "has no statement"),
        ("-- step: a\nSELECT 1", "each ending with ';'"),
        ("-- only a comment\n", "each ending with ';'"),
    ],
)
def test_malformed_migration_files_say_what_is_wrong(text, message):
    with pytest.raises(StartupError, match=message):
        parse_migration(text, "0001_x.sql")


# What kiln wrote to SQLite files before its schemas became migration files,
# copied from the code of that time: such files must keep working.
INLINE_SQLITE_SCHEMA = {
    "storage": (
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS records ("
        " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL, id TEXT NOT NULL,"
        " last_modified INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
        " data TEXT NOT NULL,"
        " PRIMARY KEY (resource_name, parent_id, id))",
        "CREATE INDEX IF NOT EXISTS records_last_modified"
        " ON records (resource_name, parent_id, last_modified)",
        "CREATE TABLE IF NOT EXISTS timestamps ("
        " resource_name TEXT NOT NULL, parent_id TEXT NOT NULL,"
        " last_modified INTEGER NOT NULL,"
        " PRIMARY KEY (resource_name, parent_id)) WITHOUT ROWID",
    ),
    "permission": (
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS user_principals ("
        " user_id TEXT NOT NULL, principal TEXT NOT NULL,"
        " PRIMARY KEY (user_id, principal)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS user_principals_principal"
        " ON user_principals (principal, user_id)",
        "CREATE TABLE IF NOT EXISTS access_control_entries ("
        " object_id TEXT NOT NULL, permission TEXT NOT NULL, principal TEXT NOT NULL,"
        " PRIMARY KEY (object_id, permission, principal)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS access_control_entries_principal"
        " ON access_control_entries (principal, permission, object_id)",
    ),
    "cache": (
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS cache ("
        " key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)",
        "CREATE INDEX IF NOT EXISTS cache_expires_at ON cache (expires_at)"
        " WHERE expires_at IS NOT NULL",
    ),
}


def _inline_sqlite_file(path):
    conn = sqlite3.connect(path, isolation_level=None)
    for component, statements in INLINE_SQLITE_SCHEMA.items():
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_versions VALUES (?, 1)", (component,))
    conn.execute(
        "INSERT INTO records VALUES ('r', 'p', 'a', 10, 0, '{\"name\":\"morel\"}'),"
        " ('r', 'p', 'b', 11, 1, '{\"deleted\":true}')"
    )
    conn.execute("INSERT INTO timestamps VALUES ('r', 'p', 11)")
    conn.execute("INSERT INTO user_principals VALUES ('alice', 'admins')")
    conn.execute("INSERT INTO access_control_entries VALUES ('/r/a', 'write', 'admins')")
    conn.execute("INSERT INTO cache VALUES ('k', '[1]', NULL)")
    conn.close()


def _sqlite_layout(path):
    conn = sqlite3.connect(path)
    try:
        layout = {}
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        for table, sql in tables:
            indexes = conn.execute(f"PRAGMA index_list({table})").fetchall()
            layout[table] = (
                "WITHOUT ROWID" in " ".join(sql.upper().split()),
                conn.execute(f"PRAGMA table_info({table})").fetchall(),
                [
                    (
                        name,
                        unique,
                        origin,
                        partial,
                        conn.execute(f"PRAGMA index_info({name})").fetchall(),
                    )
                    for _, name, unique, origin, partial in sorted(indexes, key=lambda i: i[1])
                ],
            )
        return layout
    finally:
        conn.close()


def _sqlite_backends(path):
    database = SQLiteDatabase(path)
    return database, SQLiteStorage(database), SQLitePermission(database), SQLiteCache(database)


def test_a_sqlite_file_of_the_inline_schema_opens_with_its_data_and_upgrades(tmp_path):
    old, new = str(tmp_path / "old.sqlite"), str(tmp_path / "new.sqlite")
    _inline_sqlite_file(old)
    database, storage, permission, cache = _sqlite_backends(new)
    for backend in (storage, permission, cache):
        assert backend.initialize_schema() != []
    database.close()
    layout = _sqlite_layout(old)
    assert set(layout) == {
        "schema_versions",
        "records",
        "timestamps",
        "user_principals",
        "access_control_entries",
        "cache",
    }
    assert layout == _sqlite_layout(new)

    database, storage, permission, cache = _sqlite_backends(old)
    for backend in (storage, permission, cache):
        assert backend.initialize_schema(dry_run=True) == []
        assert backend.initialize_schema() == []
    assert storage.get("r", "p", "a") == {"id": "a", "last_modified": 10, "name": "morel"}
    assert [r["id"] for r in storage.list_all("r", "p", include_deleted=True)] == ["a", "b"]
    assert storage.collection_timestamp("r", "p") == 11
    assert storage.create("r", "p", {"id": "c"})["last_modified"] > 11
    assert permission.user_principals("alice") == {"admins"}
    assert permission.check_permission("/r/a", "write", ["admins"])
    assert cache.get("k") == [1]

    upgrades = tmp_path / "storage"
    upgrades.mkdir()
    for entry in folder("sqlite", "storage").iterdir():
        (upgrades / entry.name).write_text(entry.read_text())
    (upgrades / "0002_deleted.sql").write_text(
        "-- step: create index records_deleted\n"
        "CREATE INDEX records_deleted ON records (deleted);\n"
    )
    assert database.install_schema("storage", load_migrations(upgrades)) == [
        "create index records_deleted",
        "record storage schema version 2",
    ]
    assert [r["id"] for r in storage.list_all("r", "p")] == ["a", "c"]
    with pytest.raises(StartupError, match=r"storage schema of SQLite database .* is version 2"):
        storage.initialize_schema()
    database.close()
