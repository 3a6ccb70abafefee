from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import uuid

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import kiln.storage
from kiln._postgresql import PostgreSQLDatabase, ReplicaUnavailable, describe, refusal
from kiln.cache import load_cache
from kiln.cache.postgresql import PostgreSQLCache
from kiln.config import Configuration
from kiln.exceptions import BackendError, ConfigError, StartupError, TransientBackendError
from kiln.permission import load_permission
from kiln.permission.postgresql import PostgreSQLPermission
from kiln.storage import (
    ABSENT,
    LIVE,
    Filter,
    Index,
    IndexedField,
    Operator,
    PreconditionFailed,
    RecordNotFoundError,
    Sort,
    Write,
    WriteConflict,
    keyset_rules,
    load_storage,
)
from kiln.storage._postgresql_sql import implied_bound, jsonb_text, like_pattern
from kiln.storage._python_filters import select, sort_records
from kiln.storage.postgresql import PostgreSQLStorage, list_query, migrations
from kiln.storage.testing import StorageContract, run_threads
from tests.pgschema import fresh_schema


class TestPostgreSQLStorage(StorageContract):
    # Arrays and objects sort by the text PostgreSQL prints for them.
    container_text = staticmethod(lambda value: jsonb_text(value).encode())

    @pytest.fixture
    def backend(self, postgresql_database):
        return PostgreSQLStorage(postgresql_database)

    @pytest.fixture
    def broken_backend(self, broken_postgresql_database):
        return PostgreSQLStorage(broken_postgresql_database)


# -- fixtures for the backend-specific tests -----------------------------------

R, P = "mushroom", "basicauth:alice"


@pytest.fixture
def database(postgresql_database):
    return postgresql_database


@pytest.fixture
def storage(database):
    storage = PostgreSQLStorage(database)
    storage.initialize_schema()
    storage.flush()
    return storage


def _ids(records):
    return [record["id"] for record in records]


def _one(database, sql, params=None):
    with database.transaction() as conn:
        return database.execute(conn, sql, params).fetchone()[0]


# -- schema ----------------------------------------------------------------------


def test_initialize_schema_reports_its_steps_and_dry_run_writes_nothing(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        storage = PostgreSQLStorage(database)
        steps = storage.initialize_schema(dry_run=True)
        assert steps == [
            "create table schema_versions",
            "create function kiln_casefold",
            "create table records",
            "create index records_last_modified",
            "create table timestamps",
            "create function kiln_expect",
            "record storage schema version 2",
        ]
        tables = "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        assert _one(database, tables) == 0
        assert storage.initialize_schema() == steps
        assert storage.initialize_schema() == []
        assert storage.initialize_schema(dry_run=True) == []
        with database.transaction() as conn:
            assert database.installed_version(conn, "storage") == 2
            assert database.installed_version(conn, "cache") is None
        database.close()


def test_processes_installing_the_schema_at_once_take_turns(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        databases = [PostgreSQLDatabase(url) for _ in range(4)]
        results = run_threads(4, lambda i: PostgreSQLStorage(databases[i]).initialize_schema())
        assert sorted(map(len, results)) == [0, 0, 0, 7]
        for database in databases:
            database.close()


def test_without_icu_like_folds_case_with_lower(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        database.install_schema("storage", migrations(icu=False))
        storage = PostgreSQLStorage(database)
        storage.create(R, P, {"id": "a", "t": "ÉCOLE"})
        assert _ids(storage.list_all(R, P, filters=[Filter("t", "école", Operator.LIKE)])) == ["a"]
        assert _one(database, "SELECT kiln_casefold('Straße')") == "straße"
        database.close()


def test_with_icu_like_folds_case_as_casefold_does(storage):
    for object_id, text in [("a", "ΟΔΟΣ"), ("b", "GROẞ"), ("c", "İstanbul"), ("d", "ﬁne")]:
        storage.create(R, P, {"id": object_id, "t": text})

    def like(pattern):
        return _ids(storage.list_all(R, P, filters=[Filter("t", pattern, Operator.LIKE)]))

    assert like("*οδοσ") == ["a"]
    assert like("gross") == ["b"]
    assert like("i̇stan*") == ["c"]
    assert like("FI*") == ["d"]


def test_a_database_not_in_utf8_is_refused(postgresql_url):
    name = f"kiln_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgresql_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'SQL_ASCII' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    database = PostgreSQLDatabase(make_conninfo(postgresql_url, dbname=name))
    try:
        with pytest.raises(BackendError, match="needs UTF8"):
            PostgreSQLStorage(database).initialize_schema()
    finally:
        database.close()
        with psycopg.connect(postgresql_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# -- loading ---------------------------------------------------------------------


def test_load_storage_builds_the_backend_on_the_shared_database(schema_url):
    config = Configuration.from_mapping(
        {"storage": {"backend": "postgresql", "url": schema_url, "pool_size": 3}}
    )
    storage = load_storage(config)
    assert isinstance(storage, PostgreSQLStorage)
    assert storage.database is PostgreSQLDatabase.shared(schema_url)
    assert storage.database.pool_size == 3
    assert PostgreSQLStorage(schema_url).database is storage.database
    storage.close()
    assert PostgreSQLDatabase.shared(schema_url) is not storage.database


def test_storage_permission_and_cache_on_one_url_share_one_transaction(schema_url):
    config = Configuration.from_mapping({"storage": {"backend": "postgresql", "url": schema_url}})
    storage, permission, cache = load_storage(config), load_permission(config), load_cache(config)
    assert isinstance(permission, PostgreSQLPermission)
    assert isinstance(cache, PostgreSQLCache)
    assert permission.database is storage.database is cache.database
    for backend in (storage, permission, cache):
        backend.initialize_schema()
        backend.flush()

    def fail():
        with storage.transaction():
            storage.create(R, "", {"id": "a"})
            permission.add_principal_to_ace("/r/a", "write", "alice")
            cache.set("k", 1)
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert storage.list_all(R, "") == []
    assert permission.object_permissions("/r/a") == {}
    assert cache.get("k") is None
    with permission.transaction():
        storage.create(R, "", {"id": "a"})
        permission.add_principal_to_ace("/r/a", "write", "alice")
        cache.set("k", 1)
    assert _ids(storage.list_all(R, "")) == ["a"]
    assert permission.check_permission("/r/a", "write", ["alice"])
    assert cache.get("k") == 1
    storage.close()


def test_a_missing_driver_fails_at_startup_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    config = Configuration.from_mapping(
        {"storage": {"backend": "postgresql", "url": "postgresql://kiln@db.invalid/kiln"}}
    )
    with pytest.raises(
        StartupError, match=r"Install them with `pip install 'kiln-framework\[postgresql\]'`"
    ):
        load_storage(config)


def test_a_storage_url_that_is_not_postgresql_fails_at_startup():
    config = Configuration.from_mapping({"storage": {"backend": "postgresql"}})
    with pytest.raises(ConfigError, match=r"'kiln.sqlite' is not a PostgreSQL connection URL"):
        load_storage(config)


def test_messages_name_the_server_never_the_password():
    assert describe("postgresql://kiln:s3cret@db.example:6543/app") == "db.example:6543/app"
    assert describe("dbname=app") == "localhost:5432/app"
    database = PostgreSQLDatabase(
        "postgresql://kiln:s3cret@127.0.0.1:1/app", pool_timeout=0.1, connect_timeout=1
    )
    with pytest.raises(BackendError) as info:
        PostgreSQLStorage(database).get(R, P, "a")
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1/app" in str(info.value)
    database.close()


def test_the_pool_settings_reach_each_connection(schema_url):
    database = PostgreSQLDatabase(schema_url, statement_timeout_ms=1234, connect_timeout=2.5)
    assert database._connection_kwargs()["connect_timeout"] == 3
    assert _one(database, "SHOW statement_timeout") == "1234ms"
    assert _one(database, "SHOW search_path").startswith("kiln_test_")
    database.close()
    unlimited = PostgreSQLDatabase(schema_url, statement_timeout_ms=0)
    assert "options" not in unlimited._connection_kwargs()


def test_the_unknown_backend_message_still_announces_later_backends(monkeypatch):
    monkeypatch.setattr(kiln.storage, "LATER_BACKENDS", ("mongodb",))
    config = Configuration.from_mapping({"storage": {"backend": "mongodb"}})
    with pytest.raises(ConfigError, match="'mongodb' arrives in a later release"):
        load_storage(config)
    config = Configuration.from_mapping({"storage": {"backend": "mongo"}})
    with pytest.raises(ConfigError, match=r"Did you mean 'mongodb'\? \('mongodb' arrives"):
        load_storage(config)


# -- units of work -----------------------------------------------------------------


def test_a_closed_database_fails_with_backend_error(schema_url, storage):
    never_used = PostgreSQLDatabase(schema_url)
    never_used.close()
    with pytest.raises(BackendError, match="is closed"):
        PostgreSQLStorage(never_used).get(R, P, "a")
    used = PostgreSQLDatabase(schema_url)
    assert PostgreSQLStorage(used).collection_timestamp(R, P) == 0
    used.close()
    with pytest.raises(BackendError):
        PostgreSQLStorage(used).collection_timestamp(R, P)


def test_a_snapshot_reads_one_state_while_others_commit(storage):
    storage.create(R, P, {"id": "a"})
    with storage.snapshot():
        stamp = storage.collection_timestamp(R, P)
        writer = threading.Thread(target=lambda: storage.create(R, P, {"id": "b"}))
        writer.start()
        writer.join()
        with storage.snapshot():
            assert storage.collection_timestamp(R, P) == stamp
        assert _ids(storage.list_all(R, P)) == ["a"]
    assert sorted(_ids(storage.list_all(R, P))) == ["a", "b"]
    assert storage.collection_timestamp(R, P) > stamp


def test_a_snapshot_inside_a_writing_unit_of_work_reads_its_writes(storage):
    with storage.transaction():
        created = storage.create(R, P, {"id": "a"})
        with storage.snapshot():
            assert storage.get(R, P, "a") == created
        storage.create(R, P, {"id": "b"})
    assert len(storage.list_all(R, P)) == 2


def test_a_snapshot_that_reads_nothing_leaves_the_unit_of_work_writable(storage):
    with storage.transaction():
        with storage.snapshot():
            pass
        storage.create(R, P, {"id": "a"})
    assert _ids(storage.list_all(R, P)) == ["a"]


def test_writes_need_a_unit_of_work_and_none_may_happen_in_a_snapshot(storage, database):
    with database.transaction() as conn:
        pass
    with pytest.raises(RuntimeError, match="needs an open transaction"):
        database.begin_write(conn)
    with pytest.raises(RuntimeError, match="needs an open transaction"):
        database.commit_with(conn, ("SELECT 1", None))
    with storage.snapshot(), pytest.raises(RuntimeError, match="No write may happen inside"):
        storage.create(R, P, {})
    assert storage.list_all(R, P) == []
    with storage.transaction():
        storage.apply([Write(R, P, "a", {}, ABSENT)], commit=True)
        with pytest.raises(RuntimeError, match="was committed"):
            storage.create(R, P, {"id": "b"})
    assert _ids(storage.list_all(R, P)) == ["a"]


def test_a_unit_of_work_whose_statement_failed_commits_nothing(storage):
    def work():
        with storage.transaction():
            with contextlib.suppress(BackendError):
                storage.create(R, P, {"id": "a", "bad": "\x00"})
            storage.create(R, P, {"id": "b"})

    with pytest.raises(BackendError, match="current transaction is aborted"):
        work()
    assert storage.list_all(R, P) == []


# -- failures ----------------------------------------------------------------------


def test_a_statement_past_its_timeout_fails_with_backend_error(schema_url, storage):
    storage.create(R, P, {"id": "a"})
    impatient = PostgreSQLDatabase(schema_url, statement_timeout_ms=200)
    with psycopg.connect(schema_url) as blocker:
        blocker.execute(
            "SELECT 1 FROM timestamps WHERE resource_name = %s AND parent_id = %s FOR UPDATE",
            (R, P),
        )
        started = time.monotonic()
        with pytest.raises(BackendError, match="statement timeout"):
            PostgreSQLStorage(impatient).create(R, P, {"id": "b"})
        assert time.monotonic() - started < 3
        blocker.rollback()
    PostgreSQLStorage(impatient).create(R, P, {"id": "b"})
    assert sorted(_ids(storage.list_all(R, P))) == ["a", "b"]
    impatient.close()


def _where(url):
    params = conninfo_to_dict(url)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def test_a_database_that_does_not_exist_fails_at_once_in_one_sentence(postgresql_url, caplog):
    name = f"kiln_missing_{uuid.uuid4().hex[:8]}"
    database = PostgreSQLDatabase(make_conninfo(postgresql_url, dbname=name), pool_timeout=5)
    storage = PostgreSQLStorage(database)
    started = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(BackendError) as info:
        storage.initialize_schema()
    assert time.monotonic() - started < 2
    assert str(info.value) == (
        f"PostgreSQL database `{name}` does not exist on {_where(postgresql_url)}: "
        f"create it with `createdb {name}`, then run `kiln migrate`."
    )
    assert isinstance(info.value.original, psycopg.OperationalError)
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []
    with pytest.raises(BackendError, match="does not exist"):
        storage.collection_timestamp(R, P)
    assert storage.heartbeat() is False
    database.close()


def test_a_role_that_does_not_exist_fails_at_once_in_one_sentence(postgresql_url):
    role = f"kiln_nobody_{uuid.uuid4().hex[:8]}"
    database = PostgreSQLDatabase(make_conninfo(postgresql_url, user=role))
    with pytest.raises(BackendError) as info:
        PostgreSQLPermission(database).initialize_schema()
    assert str(info.value) == (
        f"PostgreSQL role `{role}` does not exist on {_where(postgresql_url)}: create it "
        f"with `createuser {role}`, or put another user in the database URL."
    )
    database.close()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection failed: connection to server at "db.example", port 5433 failed: '
            'FATAL:  password authentication failed for user "svc"',
            "PostgreSQL on db.example:5433 refused the password of user `svc`: correct it "
            "in the database URL.",
        ),
        (
            'connection failed: connection to server at "db.example", port 5433 failed: '
            "fe_sendauth: no password supplied",
            "PostgreSQL on db.example:5433 asks for a password and the database URL gives "
            "none: add it to the URL (postgresql://user:password@host/dbname).",
        ),
        (
            'connection failed: connection to server at "db.example", port 5433 failed: '
            'FATAL:  no pg_hba.conf entry for host "10.0.0.7", user "svc", database "app", '
            "no encryption\nsecond line",
            "PostgreSQL on db.example:5433 refused the connection (no pg_hba.conf entry for "
            'host "10.0.0.7", user "svc", database "app", no encryption): allow it in the '
            "server's pg_hba.conf, or use another user or database in the URL.",
        ),
        (
            'connection failed: connection to server at "db.example", port 5433 failed: '
            "Connection refused",
            None,
        ),
        ('database "app" does not exist', None),
    ],
)
def test_a_refusal_for_good_is_told_apart_from_a_server_that_may_come_back(message, expected):
    url = "postgresql://svc@db.example:5433/app"
    assert refusal(psycopg.OperationalError(message), url) == expected


def test_a_refused_read_replica_is_unavailable_with_the_reason(postgresql_url):
    name = f"kiln_missing_{uuid.uuid4().hex[:8]}"
    primary = PostgreSQLDatabase(postgresql_url)
    replica = PostgreSQLDatabase(make_conninfo(postgresql_url, dbname=name), replica_of=primary)
    with pytest.raises(ReplicaUnavailable, match=f"`{name}` does not exist") as info:
        replica.pool()
    assert info.value.failed is True
    replica.close()
    primary.close()


def test_waiting_past_the_pool_timeout_fails_with_backend_error(schema_url, storage):
    database = PostgreSQLDatabase(schema_url, pool_size=1, pool_timeout=0.2)
    storage = PostgreSQLStorage(database)
    held, release = threading.Event(), threading.Event()

    def hold():
        with database.transaction():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(BackendError, match=r"gave no connection within 0.2 s.*pool_size"):
            storage.collection_timestamp(R, "never")
    finally:
        release.set()
        holder.join()
    assert storage.collection_timestamp(R, "never") == 0
    database.close()


def test_a_deadlock_between_two_units_of_work_is_a_transient_error(schema_url, storage):
    options = conninfo_to_dict(schema_url)["options"]
    url = make_conninfo(schema_url, options=f"{options} -c deadlock_timeout=50")
    database = PostgreSQLDatabase(url)
    racer = PostgreSQLStorage(database)
    barrier = threading.Barrier(2)

    def work(index):
        first, second = ("one", "two") if index == 0 else ("two", "one")
        with racer.transaction():
            racer.create(R, first, {"by": index})
            barrier.wait(5)
            racer.create(R, second, {"by": index})

    results = run_threads(2, work)
    errors = [result for result in results if result is not None]
    assert len(errors) == 1
    assert isinstance(errors[0], TransientBackendError)
    assert isinstance(errors[0].original, psycopg.errors.DeadlockDetected)
    winner = results.index(None)
    assert [r["by"] for r in storage.list_all(R, "one") + storage.list_all(R, "two")] == [
        winner,
        winner,
    ]
    database.close()


def _terminate(admin_url, application_name):
    with psycopg.connect(admin_url, autocommit=True) as admin:
        return admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()[0]


def test_the_pool_recovers_when_the_server_drops_its_connections(postgresql_url, schema_url):
    name = f"kiln-recovery-{uuid.uuid4().hex[:8]}"
    database = PostgreSQLDatabase(make_conninfo(schema_url, application_name=name), pool_size=4)
    storage = PostgreSQLStorage(database)
    storage.initialize_schema()
    barrier = threading.Barrier(4)

    def busy(index):
        with database.transaction() as conn:
            database.execute(conn, "SELECT 1")
            barrier.wait(5)

    assert run_threads(4, busy) == [None] * 4
    assert _terminate(postgresql_url, name) == 4
    results = run_threads(4, lambda i: storage.create(R, f"recovery-{i}", {"n": i}))
    assert all(isinstance(result, dict) for result in results)
    assert storage.collection_timestamp(R, "recovery-0") > 0
    database.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_pool_recovers_after_the_server_restarts(make_pg_primary, mode):
    primary = make_pg_primary()
    database = PostgreSQLDatabase(primary.url, pool_size=4)
    storage = PostgreSQLStorage(database)
    storage.initialize_schema()
    barrier = threading.Barrier(4)

    def busy(index):
        with database.transaction() as conn:
            database.execute(conn, "SELECT 1")
            barrier.wait(5)

    assert run_threads(4, busy) == [None] * 4
    storage.create(R, P, {"id": "before"})
    primary.restart(mode=mode)
    results = run_threads(4, lambda i: storage.create(R, P, {"id": f"after-{i}"}))
    assert all(isinstance(result, dict) for result in results)
    assert len(storage.list_all(R, P)) == 5
    database.close()


def test_a_connection_lost_before_the_commit_fails_and_commits_nothing(postgresql_url, storage):
    database = storage.database

    def work():
        with storage.transaction():
            storage.create(R, P, {"id": "a"})
            pid = _one(database, "SELECT pg_backend_pid()")
            with psycopg.connect(postgresql_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    with pytest.raises(BackendError):
        work()
    assert storage.list_all(R, P) == []


class Racing(PostgreSQLStorage):
    """Lets ``rival`` write (from its own connection) after each read this backend
    makes before a write."""

    def __init__(self, database, rival):
        super().__init__(database)
        self.rival = rival

    def _live(self, resource_name, parent_id, object_id):
        found = super()._live(resource_name, parent_id, object_id)
        self.rival()
        return found

    def list_all(self, *args, **kwargs):
        found = super().list_all(*args, **kwargs)
        self.rival()
        return found


def test_a_direct_write_losing_a_race_in_a_unit_of_work_asks_for_it_to_run_again(
    schema_url, storage
):
    storage.create(R, P, {"id": "a", "n": 0})
    other = PostgreSQLDatabase(schema_url)
    rival = PostgreSQLStorage(other)
    changes = iter(range(1, 10))
    racing = Racing(storage.database, lambda: rival.update(R, P, "a", {"n": next(changes)}))
    try:
        for write in (
            lambda: racing.update(R, P, "a", {"n": -1}),
            lambda: racing.delete_all(R, P),
        ):
            # The failed check aborted the transaction: only a new run can go on.
            with pytest.raises(TransientBackendError, match="run it again"), racing.transaction():
                write()
    finally:
        other.close()
    assert storage.get(R, P, "a")["n"] == 2


# -- what PostgreSQL cannot store: U+0000 --------------------------------------------


def test_records_holding_nul_are_refused_with_a_clear_message(storage):
    with pytest.raises(BackendError, match=r"U\+0000"):
        storage.create(R, P, {"id": "a", "text": "nul\x00"})
    with pytest.raises(BackendError, match=r"U\+0000"):
        storage.create(R, P, {"id": "a", "key\x00": 1})
    with pytest.raises(BackendError, match=r"U\+0000"):
        storage.update(R, P, "a\x00", {})
    with pytest.raises(BackendError, match=r"U\+0000"):
        storage.create(R, "parent\x00", {})
    assert storage.list_all(R, P) == []


def test_ids_and_parents_holding_nul_name_nothing(storage):
    storage.create(R, P, {"id": "a"})
    with pytest.raises(RecordNotFoundError):
        storage.get(R, P, "a\x00")
    with pytest.raises(RecordNotFoundError):
        storage.delete(R, P, "a\x00")
    with pytest.raises(PreconditionFailed) as info:
        storage.delete(R, P, "a\x00", if_match=1)
    assert info.value.existing is None
    nul = "basicauth:\x00"
    assert storage.collection_timestamp(R, nul) == 0
    assert storage.list_all(R, nul) == []
    assert storage.count_all(R, nul) == 0
    assert storage.delete_all(R, nul) == []
    assert storage.purge_deleted(R, nul) == 0
    assert storage.get_records([(R, P, "a\x00"), (R, P, "a")]) == [None, storage.get(R, P, "a")]
    assert storage.get_records([(R, P, "a\x00")]) == [None]
    assert storage.list_page(R, nul) == ([], 0)
    # A write expecting a record there finds none (a create is refused, as above).
    for expected in (LIVE, 1):
        with pytest.raises(WriteConflict) as conflict:
            storage.apply([Write(R, P, "b", {}, ABSENT), Write(R, P, "a\x00", None, expected)])
        assert conflict.value.index == 1
    assert _ids(storage.list_all(R, P)) == ["a"]
    assert _ids(storage.list_all(R, P)) == ["a"]


# -- filters: differential tests against the reference in Python -----------------

_STORED_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    2**62,
    1e16,
    "",
    "a",
    "a\x01",
    "b",
    "é",
    "🍄",
    [],
    [1],
    [1.0, "a"],
    [[1, 2]],
    [{"k": 1}],
    {},
    {"x": 1},
    {"b": 1, "a": [2]},
    {"0": "zero", "1": {"x": 2}},
]
_FILTER_VALUES = st.one_of(
    st.sampled_from(
        [
            *_STORED_VALUES,
            "a\x00",
            "\x00",
            "b\x00z",
            2**63,
            -(2**63) - 1,
            2**70,
            0.5,
            -0.0,
            float("inf"),
            float("-inf"),
            float("nan"),
            ["a\x00"],
            {"k\x00": 1},
            [[1]],
            [{"k": 1}, 1],
            [float("nan")],
        ]
    ),
    st.lists(st.sampled_from([1, "a", None, [1, 2], {"k": 1}, "a\x00"]), max_size=3),
)
_FILTER_FIELDS = st.sampled_from(
    ["v", "v.x", "v.0", "v.1.x", "v. 1", "id", "last_modified", "v\x00", "id.x"]
)


@pytest.fixture(scope="module")
def assorted_storage(postgresql_url):
    """A storage holding a record of every kind of value, for read-only tests."""
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        storage = PostgreSQLStorage(database)
        storage.initialize_schema()
        for index, value in enumerate(_STORED_VALUES):
            storage.create(R, P, {"id": f"r{index:02d}-é{'z' * index}", "v": value})
        storage.create(R, P, {"id": "missing", "w": 1})
        storage.create(R, P, {"id": "Z", "v": {"x": "ab"}})
        yield storage
        database.close()


@pytest.fixture
def assorted(assorted_storage):
    return assorted_storage.list_all(R, P, sorting=[Sort("id", 1)])


_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_settings
@given(
    field=_FILTER_FIELDS,
    operator=st.sampled_from(list(Operator)),
    value=_FILTER_VALUES,
)
def test_filters_match_the_reference_semantics(assorted_storage, assorted, field, operator, value):
    storage = assorted_storage
    filter_ = Filter(field, value, operator)
    expected = {record["id"] for record in select(assorted, [filter_])}
    assert set(_ids(storage.list_all(R, P, filters=[filter_]))) == expected
    assert storage.count_all(R, P, filters=[filter_]) == len(expected)


def _as_stored(value):
    if isinstance(value, list):
        return [_as_stored(item) for item in value]
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return {key: _as_stored(value[key]) for key in keys}
    return value


@_settings
@given(
    field=_FILTER_FIELDS,
    operator=st.sampled_from([Operator.LT, Operator.GT, Operator.MIN, Operator.MAX]),
    value=_FILTER_VALUES,
)
def test_pagination_rules_match_the_reference_total_order(
    assorted_storage, assorted, field, operator, value
):
    storage = assorted_storage
    # Keyset values come from stored records, whose objects have jsonb's key order.
    rule = [Filter(field, _as_stored(value), operator)]
    expected = {record["id"] for record in select(assorted, [], [rule])}
    assert set(_ids(storage.list_all(R, P, pagination_rules=[rule]))) == expected


@pytest.mark.parametrize("field", ["v", "id", "last_modified"])
@pytest.mark.parametrize(
    "operator", [Operator.LT, Operator.GT, Operator.MIN, Operator.MAX, Operator.EQ, Operator.IN]
)
@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        2**70,
        -(2**70),
        10**400,
        1.5,
        2.0,
        "r05",
        "r05\x00",
        [1],
    ],
    ids=["nan", "inf", "-inf", "huge", "-huge", "enormous", "float", "whole", "str", "nul", "list"],
)
def test_comparisons_with_edge_values_match_the_reference(
    assorted_storage, assorted, field, operator, value
):
    storage = assorted_storage
    filter_ = Filter(field, value, operator)
    expected = {record["id"] for record in select(assorted, [filter_])}
    assert set(_ids(storage.list_all(R, P, filters=[filter_]))) == expected
    expected = {record["id"] for record in select(assorted, [], [[filter_]])}
    assert set(_ids(storage.list_all(R, P, pagination_rules=[[filter_]]))) == expected


@pytest.mark.parametrize("operator", [Operator.CONTAINS, Operator.CONTAINS_ANY])
@pytest.mark.parametrize(
    "value",
    [[1, "a"], [1.0], [[1, 2]], [{"k": 1}, 1], ["a", "a\x00"], [float("nan")], [], "a"],
    ids=["scalars", "float", "array", "object", "nul", "nan", "none", "one"],
)
def test_contains_matches_the_reference(assorted_storage, assorted, operator, value):
    filter_ = Filter("v", value, operator)
    expected = {record["id"] for record in select(assorted, [filter_])}
    assert set(_ids(assorted_storage.list_all(R, P, filters=[filter_]))) == expected


@pytest.mark.parametrize("field", ["v", "id", "last_modified", "v.x"])
def test_sorting_matches_the_reference_order(assorted_storage, assorted, field):
    storage = assorted_storage
    for direction in (1, -1):
        sorting = [Sort(field, direction), Sort("id", 1)]
        expected = list(assorted)
        sort_records(expected, sorting)
        assert storage.list_all(R, P, sorting=sorting) == expected


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=3), children
        )
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(value=_json_values)
def test_jsonb_text_is_the_text_postgresql_prints(postgresql_url, value):
    with psycopg.connect(postgresql_url) as conn:
        printed = conn.execute("SELECT %s::jsonb::text", (orjson.dumps(value).decode(),))
        assert jsonb_text(value) == printed.fetchone()[0]


def test_jsonb_text_spells_big_integers_nul_and_floats_json_cannot():
    assert (
        jsonb_text([2**70, {"bb": 1, "a": "\x00"}])
        == '[1180591620717411303424, {"a": "\\u0000", "bb": 1}]'
    )
    assert jsonb_text([float("nan"), float("-inf"), -0.0]) == "[null, null, 0.0]"


def test_like_patterns_escape_sql_wildcards():
    assert like_pattern("100%_\\*x") == "100\\%\\_\\\\%x"
    assert like_pattern("plain") == "%plain%"


# -- plans ---------------------------------------------------------------------------


def _plan(database, sql, params):
    with database.transaction() as conn:
        rows = database.execute(conn, f"EXPLAIN {sql}", params).fetchall()
    return "\n".join(row[0] for row in rows)


def test_since_lists_and_id_pages_use_the_indexes(storage, database):
    with database.transaction() as conn:
        database.begin_write(conn)
        database.execute(
            conn,
            "INSERT INTO records SELECT %s, %s || (n %% 20), 'id' || n, n, false, '{}'"
            " FROM generate_series(1, 20000) AS n",
            (R, P),
        )
    with database.transaction() as conn:
        database.execute(conn, "ANALYZE records")
    since = list_query(
        R,
        P,
        filters=[Filter("last_modified", 10, Operator.GT)],
        sorting=[Sort("last_modified", 1)],
        limit=10,
    )
    assert "records_last_modified" in _plan(database, since[0], since[1].values)
    rules = [[Filter("id", "m", Operator.GT)]]
    by_id = list_query(R, P, sorting=[Sort("id", 1)], pagination_rules=rules, limit=10)
    assert "records_pkey" in _plan(database, by_id[0], by_id[1].values)
    sorting = [Sort("last_modified", -1), Sort("id", 1)]
    rules = keyset_rules(sorting, {"last_modified": 1234, "id": "x"})
    next_page = list_query(R, P, sorting=sorting, pagination_rules=rules, limit=10)
    plan = _plan(database, next_page[0], next_page[1].values)
    index_condition = plan.split("Index Cond:")[1].splitlines()[0]
    assert "last_modified <= '1234'::bigint" in index_condition


@pytest.mark.parametrize(
    ("rules", "bound"),
    [
        (
            [
                [Filter("last_modified", 5, Operator.LT)],
                [Filter("last_modified", 5), Filter("id", "x", Operator.GT)],
            ],
            Filter("last_modified", 5, Operator.MAX),
        ),
        (
            [[Filter("id", "x", Operator.GT)], [Filter("id", "x", Operator.MIN)]],
            Filter("id", "x", Operator.MIN),
        ),
        ([[Filter("id", "x", Operator.GT)], [Filter("id", "x", Operator.LT)]], None),
        ([[Filter("id", "x", Operator.GT)], [Filter("id", "y", Operator.GT)]], None),
        ([[Filter("last_modified", 5, Operator.GT)], [Filter("last_modified", 5.0)]], None),
        ([[Filter("v", 5, Operator.GT)]], None),
        ([[Filter("id", "x", Operator.GT)], []], None),
    ],
)
def test_keyset_rules_bound_the_index_scan_when_all_imply_it(rules, bound):
    assert implied_bound(rules) == bound


# -- declared indexes: typed fields -------------------------------------------------

_TYPED = {"n": "number", "i": "integer", "b": "boolean", "s": "string"}
_INDEXES = [
    Index(R, (IndexedField("b", "boolean"), IndexedField("n", "number", -1))),
    Index(R, (IndexedField("s", "string"), IndexedField("i", "integer"))),
]


@pytest.fixture(scope="module")
def indexed_storage(postgresql_url):
    """Records whose typed fields hold their type or are missing, with indexes on them."""
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        storage = PostgreSQLStorage(database)
        storage.declare_indexes(_INDEXES)
        storage.initialize_schema()
        values = {
            "n": [-1.5, 0, 2, 2.0, 10**20, 7],
            "i": [0, 1, -3, 2**40],
            "b": [True, False],
            "s": ["", "a", "B", "é", "🍄", "a b", "ab"],
        }
        for number in range(40):
            record = {
                field: options[(number * (k + 3)) % (len(options) + 1) - 1]
                for k, (field, options) in enumerate(values.items())
                if (number * (k + 3)) % (len(options) + 1)
            }
            storage.create(R, P, {"id": f"r{number:02d}", **record})
        yield storage
        database.close()


_TYPED_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, 2, 2.0, -1.5, 10**20, 3, "", "a", "B", "é", [1]]),
    st.integers(-5, 5),
    st.text(max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
)


@_settings
@given(
    field=st.sampled_from(sorted(_TYPED)),
    operator=st.sampled_from(list(Operator)),
    value=_TYPED_VALUES,
)
def test_filters_on_indexed_fields_match_the_reference(indexed_storage, field, operator, value):
    storage = indexed_storage
    records = _all_indexed(storage)
    filter_ = Filter(field, value, operator)
    expected = {record["id"] for record in select(records, [filter_])}
    assert set(_ids(storage.list_all(R, P, filters=[filter_]))) == expected
    assert storage.count_all(R, P, filters=[filter_]) == len(expected)


def _all_indexed(storage):
    # Read without the typed compilation: a plain storage on the same database.
    return PostgreSQLStorage(storage.database).list_all(R, P, sorting=[Sort("id", 1)])


@_settings
@given(
    sorting=st.lists(
        st.tuples(st.sampled_from(sorted(_TYPED)), st.sampled_from([1, -1])),
        min_size=1,
        max_size=3,
        unique_by=lambda sort: sort[0],
    ),
    limit=st.integers(1, 7),
)
def test_pages_sorted_on_indexed_fields_follow_the_reference_order(indexed_storage, sorting, limit):
    storage = indexed_storage
    order = [Sort(field, direction) for field, direction in sorting]
    order += [Sort("last_modified", -1), Sort("id", 1)]
    expected = _all_indexed(storage)
    sort_records(expected, order)
    seen, rules = [], []
    while True:
        page = storage.list_all(R, P, sorting=order, pagination_rules=rules, limit=limit)
        seen += page
        if len(page) < limit:
            break
        rules = keyset_rules(order, page[-1])
    assert _ids(seen) == _ids(expected)


def test_a_declared_index_is_created_with_the_schema_and_used_by_its_list(postgresql_url):
    with fresh_schema(postgresql_url) as url:
        database = PostgreSQLDatabase(url)
        storage = PostgreSQLStorage(database)
        storage.declare_indexes(_INDEXES[:1])
        name = _INDEXES[0].name
        assert storage.initialize_schema(dry_run=True)[-1] == f"create index {name}"
        assert storage.initialize_schema()[-1] == f"create index {name}"
        assert storage.initialize_schema() == []
        for number in range(300):
            storage.create(R, P, {"b": number % 2 == 0, "n": number})
        with database.transaction() as conn:
            database.execute(conn, "ANALYZE records")
        sql, params = list_query(
            R,
            P,
            filters=[Filter("b", True)],
            sorting=[Sort("n", -1), Sort("last_modified", -1), Sort("id", 1)],
            limit=21,
            typed=_TYPED,
        )
        with database.transaction() as conn:
            # Sorting made dear: the plan reads the index in order if it can.
            database.begin_write(conn)
            database.execute(conn, "SET LOCAL enable_sort = off")
            rows = database.execute(conn, f"EXPLAIN {sql}", params.values).fetchall()
        plan = "\n".join(row[0] for row in rows)
        assert f"Index Scan using {name}" in plan, plan
        assert "Sort" not in plan
        page = storage.list_all(R, P, filters=[Filter("b", True)], sorting=[Sort("n", -1)], limit=3)
        assert [record["n"] for record in page] == [298, 296, 294]
        database.close()
