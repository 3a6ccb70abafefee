from __future__ import annotations

import pytest

from kiln._postgresql import PostgreSQLDatabase
from kiln.config import Configuration
from kiln.permission import load_permission
from kiln.permission.postgresql import PostgreSQLPermission, like_pattern, pattern_query
from kiln.permission.testing import PermissionContract
from tests.pgschema import fresh_schema


class TestPostgreSQLPermission(PermissionContract):
    @pytest.fixture
    def backend(self, postgresql_database):
        return PostgreSQLPermission(postgresql_database)

    @pytest.fixture
    def broken_backend(self, broken_postgresql_database):
        return PostgreSQLPermission(broken_postgresql_database)


@pytest.fixture
def database(postgresql_database):
    return postgresql_database


@pytest.fixture
def permission(database):
    permission = PostgreSQLPermission(database)
    permission.initialize_schema()
    permission.flush()
    return permission


def test_initialize_schema_reports_its_steps_and_dry_run_writes_nothing(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        permission = PostgreSQLPermission(database)
        steps = permission.initialize_schema(dry_run=True)
        assert steps == [
            "create table schema_versions",
            "create table user_principals",
            "create index user_principals_principal",
            "create table access_control_entries",
            "create index access_control_entries_principal",
            "record permission schema version 1",
        ]
        assert permission.heartbeat() is False
        assert permission.initialize_schema() == steps
        assert permission.initialize_schema() == []
        assert permission.heartbeat() is True
        database.close()


def test_load_permission_reads_its_own_url(schema_url):
    config = Configuration.from_mapping(
        {
            "storage": {"backend": "postgresql", "url": "postgresql://kiln@storage.invalid/kiln"},
            "permission": {"url": schema_url},
        }
    )
    permission = load_permission(config)
    assert isinstance(permission, PostgreSQLPermission)
    assert permission.database is PostgreSQLDatabase.shared(schema_url)
    assert PostgreSQLPermission(schema_url).database is permission.database
    permission.close()


def test_strings_are_stored_as_their_exact_bytes(permission, database):
    permission.add_user_principal("alice", "lone \ud800 surrogate")
    permission.add_principal_to_ace("/a/é", "read", "nul\x00")
    assert permission.user_principals("alice") == {"lone \ud800 surrogate"}
    assert permission.object_permissions("/a/é") == {"read": {"nul\x00"}}
    with database.transaction() as conn:
        row = database.execute(conn, "SELECT object_id FROM access_control_entries").fetchone()
    assert bytes(row[0]) == "/a/é".encode()


def test_like_patterns_make_only_the_star_a_wildcard():
    assert like_pattern("/a/%_\\*") == b"/a/\\%\\_\\\\%"


def test_replacing_no_permission_changes_nothing(permission):
    permission.add_principal_to_ace("/a", "read", "alice")
    permission.replace_object_permissions("/a", {})
    assert permission.object_permissions("/a") == {"read": {"alice"}}


def test_accessible_objects_are_found_through_the_principal_index(permission, database):
    with database.transaction() as conn:
        database.begin_write(conn)
        database.execute(
            conn,
            "INSERT INTO access_control_entries"
            " SELECT convert_to('/b/' || (n % 100) || '/c/' || n, 'UTF8'), 'read',"
            " convert_to('user-' || (n % 500), 'UTF8') FROM generate_series(1, 20000) AS n",
        )
    with database.transaction() as conn:
        database.execute(conn, "ANALYZE access_control_entries")
    assert permission.principals_accessible_objects(["user-7"], "read", "/b/7/c/*") == {
        f"/b/7/c/{n}" for n in range(7, 20001, 500)
    }
    statement, params = pattern_query([b"user-7"], [("/b/*/c/*", "read"), ("/b/7", "write")])
    with database.transaction() as conn:
        plan = database.execute(conn, f"EXPLAIN {statement}", params).fetchall()
    assert "Seq Scan on access_control_entries" not in str(plan)
    assert "Index Scan on access_control_entries_principal" in str(plan)
