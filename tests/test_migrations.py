from __future__ import annotations

from importlib import resources

import pytest

from kiln._postgresql import PostgreSQLDatabase
from kiln.exceptions import StartupError
from kiln.migrations import Migration, load_migrations, parse_migration, shipped
from kiln.storage.postgresql import migrations as storage_migrations
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


@pytest.fixture
def database(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        yield database
        database.close()


def rows(database, sql):
    with database.transaction() as conn:
        return database.execute(conn, sql).fetchall()


def test_the_shipped_migrations_are_numbered_files(tmp_path):
    storage = storage_migrations(icu=True)
    assert [m.number for m in storage] == [1]
    assert [d for d, _ in storage[0].steps] == [
        "create function kiln_casefold",
        "create table records",
        "create index records_last_modified",
        "create table timestamps",
    ]
    assert shipped("postgresql", "permission")[0].steps[0][0] == "create table user_principals"
    folder = resources.files("kiln.migrations").joinpath("postgresql", "cache")
    assert [entry.name for entry in folder.iterdir() if entry.name.endswith(".sql")] == [
        "0001_cache.sql"
    ]


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
    assert rows(
        database,
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_name = 'things' AND column_name = 'label'",
    ) == [(0,)]
    assert database.install_schema("things", both) == planned
    assert rows(database, "SELECT n, label FROM things") == [(1, "one")]
    assert database.install_schema("things", both) == []
    with database.transaction() as conn:
        assert database.installed_version(conn, "things") == 2


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
