from __future__ import annotations

import contextlib
import gc
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql
import pytest
from flask import request

import kiln.config
import kiln.database
from kiln import create_app
from kiln.config import Configuration
from kiln.database import (
    Database,
    DatabaseContext,
    ServerPool,
    _Snapshot,
    describe_entry,
    is_alive,
    load_driver,
)
from kiln.exceptions import BackendError, ConfigError
from tests.services import mysql_connect_kwargs


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    name: str
    module: str
    entry: Any
    down_entry: Any
    mark: str
    id_column: str
    tables: list[str] = field(default_factory=list)

    def connect(self) -> Any:
        driver = load_driver(self.module)
        if isinstance(self.entry, str):
            return driver.connect(self.entry)
        return driver.connect(**self.entry)

    def config(self, **database: Any) -> dict[str, Any]:
        return {"database": {"module": self.module, "write": [self.entry], **database}}

    def sql(self, statement: str) -> str:
        return statement.replace("%s", self.mark)

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(self.sql(statement), params)
            rows = list(cur.fetchall()) if cur.description else []
            cur.close()
            conn.commit()
            return rows
        finally:
            conn.close()

    def table(self) -> str:
        name = f"kiln_t_{uuid.uuid4().hex[:12]}"
        self.run(f"CREATE TABLE {name} ({self.id_column}, email VARCHAR(200))")
        self.tables.append(name)
        return name

    def count(self, table: str) -> int:
        return int(self.run(f"SELECT COUNT(*) FROM {table}")[0][0])


def _replace_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return parts._replace(netloc=f"{netloc}:{port}").geturl()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        # WAL, as kiln's SQLite backends use: concurrent writers wait less.
        with contextlib.closing(sqlite3.connect(tmp_path / "kiln.db")) as conn:
            conn.execute("PRAGMA journal_mode=wal")
        rv = Backend(
            "sqlite",
            "sqlite3",
            str(tmp_path / "kiln.db"),
            str(tmp_path / "missing" / "down.db"),
            "?",
            "id INTEGER PRIMARY KEY AUTOINCREMENT",
        )
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgresql_url")
        rv = Backend(
            "postgresql",
            "psycopg",
            url,
            _replace_port(url, closed_port()),
            "%s",
            "id SERIAL PRIMARY KEY",
        )
    else:
        kwargs = mysql_connect_kwargs(request.getfixturevalue("mysql_url"))
        rv = Backend(
            "mysql",
            "pymysql",
            kwargs,
            {**kwargs, "port": closed_port()},
            "%s",
            "id INT AUTO_INCREMENT PRIMARY KEY",
        )
    yield rv
    for table in rv.tables:
        rv.run(f"DROP TABLE {table}")


@pytest.fixture
def make_db() -> Any:
    made: list[Database] = []

    def make(config: Any) -> Database:
        db = Database(config)
        made.append(db)
        return db

    yield make
    for db in made:
        db.close()


@pytest.fixture
def sqlite_db(tmp_path: Any, make_db: Any) -> Database:
    db: Database = make_db(
        {"database": {"module": "sqlite3", "write": [str(tmp_path / "s.db")], "pool_size": 2}}
    )
    with db.write as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    return db


# -- import and configuration ----------------------------------------------


def test_importing_kiln_database_needs_no_config() -> None:
    env = {**os.environ, "KILN_CONFIG": "/nonexistent/kiln.yaml"}
    code = "import kiln.database as d; print(repr(d.write))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "not used yet" in result.stdout


def test_settings_are_registered() -> None:
    keys = [key for key in kiln.config.SETTINGS if key.startswith("database.")]
    assert sorted(keys) == [
        "database.connect_timeout",
        "database.module",
        "database.pool_size",
        "database.read",
        "database.retry_after_seconds",
        "database.write",
    ]


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (None, "database.module is not set"),
        ("MySQLdb", "pip install mysqlclient"),
        ("pymsql", "Did you mean 'pymysql'?"),
        ("no_such_driver_xyz", "pip install no_such_driver_xyz"),
        ("json", "not a DB-API module"),
    ],
)
def test_a_wrong_module_is_a_config_error_saying_what_to_do(module: Any, message: str) -> None:
    db = Database({"database": {"module": module, "write": ["x.db"]}})
    with pytest.raises(ConfigError, match=message):
        db.write.__enter__()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (None, "database is not configured"),
        ({"module": "sqlite3"}, "database.write must list at least one server"),
        ({"module": "sqlite3", "write": []}, "database.write must list"),
        ({"module": "sqlite3", "write": ["a.db"], "read": []}, "database.read must list"),
        ({"module": "sqlite3", "write": [3]}, "must be mappings of connect"),
    ],
)
def test_a_wrong_database_section_is_a_config_error(section: Any, message: str) -> None:
    db = Database({"database": section} if section is not None else {})
    with pytest.raises(ConfigError, match=message):
        db.check()


def test_a_setting_of_the_wrong_type_is_a_config_error_at_first_use() -> None:
    configuration = Configuration.from_mapping({"database": {"module": "sqlite3", "write": ["a"]}})
    configuration.set("database.pool_size", "5")
    with pytest.raises(ConfigError, match=r"'database\.pool_size' must be an integer"):
        Database(configuration).check()


def test_the_default_database_follows_the_process_config() -> None:
    assert Database().config is kiln.config.CONFIG


def test_connect_arguments_the_driver_refuses_are_a_config_error(tmp_path: Any) -> None:
    entry = {"database": str(tmp_path / "a.db"), "colour": "blue"}
    db = Database({"database": {"module": "sqlite3", "write": [entry]}})
    with pytest.raises(ConfigError, match=r"refused its arguments"), db.write:
        pass


def test_reprs_name_the_driver_and_servers_without_passwords(sqlite_db: Database) -> None:
    assert "sqlite3" in repr(sqlite_db.write)
    assert repr(sqlite_db.read).startswith("<DatabaseContext read of <Database sqlite3")
    pool = sqlite_db._current().roles["write"][0]
    assert repr(pool).startswith("<ServerPool sqlite3")
    assert repr(Database({})) == "<Database (not used yet)>"


def test_describe_entry_hides_passwords() -> None:
    assert describe_entry("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert describe_entry("host=h password=secret dbname=d") == "host=h password=*** dbname=d"
    assert describe_entry({"host": "h", "password": "s", "passwd": "s"}) == "host=h"


def test_a_context_has_a_read_or_write_role() -> None:
    with pytest.raises(ValueError, match="role must be"):
        DatabaseContext(Database({}), "admin")


def test_from_config_builds_a_context_of_its_own(tmp_path: Any) -> None:
    config = {"database": {"module": "sqlite3", "write": [str(tmp_path / "x.db")]}}
    context = DatabaseContext.from_config(config, "write")
    with context as conn:
        conn.execute("CREATE TABLE t (x)")
    assert context.role == "write"
    assert context.database.module is sqlite3
    context.database.close()


# -- the manual's examples ---------------------------------------------------


def test_the_manuals_view_examples_work(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    table = backend.table()
    monkeypatch.setattr(kiln.config.CONFIG, "config", backend.config())
    app = create_app(kiln.config.CONFIG, configure_logging=False)
    database = kiln.database

    @app.route("/user/create", methods=["POST"])
    def user_create() -> Any:
        with database.write as db:
            cur = db.cursor()
            cur.execute(
                backend.sql(f"INSERT INTO {table}(email) VALUES(%s)"), (request.form["email"],)
            )
            cur.close()
            db.commit()
        return "", 201

    @app.route("/user/<int:userid>", methods=["GET"])
    def user_show(userid: int) -> Any:
        with database.read as db:
            cur = db.cursor()
            cur.execute(backend.sql(f"SELECT email FROM {table} WHERE id=%s"), (userid,))
            result = cur.fetchone()
            cur.close()
            return {"email": result[0]}

    client = app.test_client()
    assert client.post("/user/create", data={"email": "test@uber.com"}).status_code == 201
    assert client.get("/user/1").get_json() == {"email": "test@uber.com"}
    kiln.database.DATABASE.close()


# -- transactions ------------------------------------------------------------


def test_write_commits_when_the_block_succeeds(backend: Backend, make_db: Any) -> None:
    table = backend.table()
    db = make_db(backend.config())
    with db.write as conn:
        cur = conn.cursor()
        cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
        cur.close()
    assert backend.count(table) == 1


def test_write_rolls_back_when_the_block_raises(backend: Backend, make_db: Any) -> None:
    table = backend.table()
    db = make_db(backend.config())

    def insert_then_fail() -> None:
        with db.write as conn:
            cur = conn.cursor()
            cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
            raise KeyError("boom")

    with pytest.raises(KeyError):
        insert_then_fail()
    assert backend.count(table) == 0


def test_read_rolls_back_at_exit(backend: Backend, make_db: Any) -> None:
    table = backend.table()
    db = make_db(backend.config())
    with db.read as conn:
        cur = conn.cursor()
        cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
    assert backend.count(table) == 0


def test_errors_of_the_callers_sql_propagate_unchanged(backend: Backend, make_db: Any) -> None:
    db = make_db(backend.config())
    driver = load_driver(backend.module)
    with pytest.raises(driver.Error) as info, db.read as conn:
        conn.cursor().execute("SELECT * FROM no_such_table_kiln")
    assert not isinstance(info.value, BackendError)
    with db.read as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1


def test_64_threads_write_concurrently(backend: Backend, make_db: Any) -> None:
    table = backend.table()
    db = make_db(backend.config())
    barrier = threading.Barrier(64)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            with db.write as conn:
                cur = conn.cursor()
                cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), (f"{n}@x",))
                cur.close()
            with db.read as conn:
                cur = conn.cursor()
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                assert cur.fetchone()[0] >= 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert backend.count(table) == 64


def test_nested_writes_share_a_connection_and_only_the_outermost_commits(
    backend: Backend, make_db: Any
) -> None:
    table = backend.table()
    db = make_db(backend.config())
    with db.write as outer:
        with db.write as inner:
            assert inner is outer
            cur = inner.cursor()
            cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
            cur.close()
        assert backend.count(table) == 0
    assert backend.count(table) == 1


def test_a_read_inside_a_write_sees_the_uncommitted_rows(backend: Backend, make_db: Any) -> None:
    table = backend.table()
    db = make_db(backend.config(read=[backend.entry]))
    with db.write as writer:
        cur = writer.cursor()
        cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
        with db.read as reader:
            assert reader is writer
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            assert cur.fetchone()[0] == 1
        cur.close()
    assert backend.count(table) == 1


def test_an_exception_in_a_nested_block_rolls_back_the_outermost(
    backend: Backend, make_db: Any
) -> None:
    table = backend.table()
    db = make_db(backend.config())

    def insert_then_fail_inside() -> None:
        with db.write as outer:
            cur = outer.cursor()
            cur.execute(backend.sql(f"INSERT INTO {table}(email) VALUES (%s)"), ("a@b.c",))
            with db.write:
                raise RuntimeError

    with pytest.raises(RuntimeError):
        insert_then_fail_inside()
    assert backend.count(table) == 0


def test_a_commit_that_fails_on_its_own_propagates_unchanged(
    postgresql_url: str, make_db: Any
) -> None:
    name = f"kiln_t_{uuid.uuid4().hex[:12]}"
    db = make_db({"database": {"module": "psycopg", "write": [postgresql_url]}})
    with db.write as conn:
        conn.execute(
            f"CREATE TABLE {name} (x INT, CONSTRAINT u UNIQUE (x) DEFERRABLE INITIALLY DEFERRED)"
        )
    try:
        with pytest.raises(psycopg.errors.UniqueViolation), db.write as conn:
            conn.execute(f"INSERT INTO {name} VALUES (1), (1)")
        with db.write as conn:
            assert conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] == 0
    finally:
        with db.write as conn:
            conn.execute(f"DROP TABLE {name}")


def test_a_commit_on_a_lost_connection_is_a_backend_error(
    postgresql_url: str, make_db: Any
) -> None:
    db = make_db({"database": {"module": "psycopg", "write": [postgresql_url]}})

    def lose_the_connection() -> None:
        with db.write as conn, psycopg.connect(postgresql_url, autocommit=True) as killer:
            conn.execute("SELECT 1")
            killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            time.sleep(0.05)

    with pytest.raises(BackendError, match="lost while committing"):
        lose_the_connection()
    assert db.heartbeat() == {"read": True, "write": True}


# -- pools -------------------------------------------------------------------


def test_the_pool_reuses_a_connection_sequentially(backend: Backend, make_db: Any) -> None:
    db = make_db(backend.config())
    with db.write as first:
        pass
    with db.write as second:
        pass
    with db.read as third:
        pass
    assert first is second is third


def test_a_pool_of_size_zero_closes_every_connection(tmp_path: Any, make_db: Any) -> None:
    db = make_db(
        {"database": {"module": "sqlite3", "write": [str(tmp_path / "x.db")], "pool_size": 0}}
    )
    with db.write as first:
        pass
    assert not is_alive(first)
    with db.write as second:
        assert second is not first


def test_a_busy_moment_opens_more_connections_than_the_pool_keeps(
    sqlite_db: Database,
) -> None:
    pool = sqlite_db._current().roles["write"][0]
    held = [pool.checkout() for _ in range(3)]
    assert len({id(conn) for conn in held}) == 3
    for conn in held:
        pool.checkin(conn)
    assert len(pool._idle) == 2
    assert not is_alive(held[2])


def test_a_broken_pooled_connection_is_discarded(backend: Backend, make_db: Any) -> None:
    db = make_db(backend.config())
    with db.write as first:
        pass
    if backend.name == "postgresql":
        with psycopg.connect(backend.entry, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
    elif backend.name == "mysql":
        killer = backend.connect()
        killer.cursor().execute(f"KILL {first.thread_id()}")
        killer.close()
    else:
        first.close()
    time.sleep(0.1)
    assert not is_alive(first)
    with db.write as second:
        cur = second.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
    assert second is not first


def test_a_connection_closed_inside_the_block_is_discarded(sqlite_db: Database) -> None:
    with sqlite_db.read as first:
        first.close()
    with sqlite_db.read as second:
        assert second.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
    assert second is not first


def test_is_alive_reads_the_drivers_state(backend: Backend) -> None:
    conn = backend.connect()
    assert is_alive(conn)
    conn.close()
    assert not is_alive(conn)


def test_closing_a_connection_twice_is_quiet(mysql_url: str) -> None:
    pool = ServerPool(pymysql, mysql_connect_kwargs(mysql_url), size=1, connect_timeout=3)
    conn = pool.checkout()
    conn.close()
    pool.checkin(conn, reusable=False)
    assert not conn.open


def test_a_dsn_with_its_own_connect_timeout_keeps_it(postgresql_url: str) -> None:
    url = postgresql_url + ("&" if "?" in postgresql_url else "?") + "connect_timeout=2"
    pool = ServerPool(psycopg, url, size=1, connect_timeout=9)
    conn = pool.checkout()
    assert conn.info.get_parameters()["connect_timeout"] == "2"
    pool.checkin(conn)
    pool.close()
    assert conn.closed


# -- failover ----------------------------------------------------------------


def test_reads_fail_over_when_a_server_is_down(backend: Backend, make_db: Any) -> None:
    db = make_db(backend.config(read=[backend.down_entry, backend.entry]))
    for _ in range(20):
        with db.read as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone()[0] == 1
    down, up = db._current().roles["read"]
    assert down.down_until > time.monotonic()
    assert up.down_until == 0.0


def test_a_server_marked_down_is_tried_last(sqlite_db: Database, tmp_path: Any) -> None:
    config = {
        "module": "sqlite3",
        "write": [str(tmp_path / "a.db"), str(tmp_path / "b.db")],
        "retry_after_seconds": 60,
    }
    db = Database({"database": config})
    first, second = db._current().roles["write"]
    first.down_until = time.monotonic() + 60
    for _ in range(10):
        with db.write:
            pass
    assert first._idle == []
    assert len(second._idle) == 1
    db.close()


def test_no_reachable_server_is_a_backend_error(backend: Backend, make_db: Any) -> None:
    db = make_db(backend.config(write=[backend.down_entry]))
    with pytest.raises(BackendError, match="No database write server could be reached"):
        db.write.__enter__()


# -- heartbeat ---------------------------------------------------------------


def test_heartbeat_says_whether_each_role_answers(backend: Backend, make_db: Any) -> None:
    assert make_db(backend.config()).heartbeat() == {"read": True, "write": True}
    down = make_db(backend.config(read=[backend.down_entry]))
    assert down.heartbeat() == {"read": False, "write": True}


def test_init_app_registers_a_database_heartbeat(tmp_path: Any) -> None:
    up = {"module": "sqlite3", "write": [str(tmp_path / "a.db")]}
    app = create_app({"views": ["kiln.database"], "database": up}, configure_logging=False)
    assert app.test_client().get("/__heartbeat__").get_json() == {"database": True}
    kiln.database.database_for(app).close()
    down = {**up, "read": [str(tmp_path / "missing" / "b.db")]}
    app = create_app({"views": ["kiln.database"], "database": down}, configure_logging=False)
    response = app.test_client().get("/__heartbeat__")
    assert response.status_code == 503
    assert response.get_json() == {"database": False}


def test_init_app_without_a_database_section_registers_nothing() -> None:
    app = create_app({"views": ["kiln.database"]}, configure_logging=False)
    assert app.test_client().get("/__heartbeat__").get_json() == {}


def test_init_app_with_the_process_config_uses_the_process_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    tree = {"views": ["kiln.database"], "database": {"module": "sqlite3", "write": ["x.db"]}}
    monkeypatch.setattr(kiln.config.CONFIG, "config", tree)
    app = create_app(kiln.config.CONFIG, configure_logging=False)
    assert kiln.database.database_for(app) is kiln.database.DATABASE
    kiln.database.DATABASE.close()


def test_init_app_fails_at_startup_on_an_unknown_module() -> None:
    tree = {"views": ["kiln.database"], "database": {"module": "pymsql", "write": ["x"]}}
    with pytest.raises(ConfigError, match="Did you mean 'pymysql'"):
        create_app(tree, configure_logging=False)


def test_module_level_heartbeat_uses_the_process_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    tree = {"database": {"module": "sqlite3", "write": [str(tmp_path / "p.db")]}}
    monkeypatch.setattr(kiln.config.CONFIG, "config", tree)
    assert kiln.database.heartbeat() == {"read": True, "write": True}
    kiln.database.DATABASE.close()


# -- reload --------------------------------------------------------------------


def test_a_reload_swaps_in_fresh_pools_and_closes_old_idle_connections(
    tmp_path: Any,
) -> None:
    config_file = tmp_path / "kiln.json"
    config_file.write_text(
        '{"database": {"module": "sqlite3", "write": ["%s"]}}' % (tmp_path / "a.db")
    )
    configuration = Configuration([str(config_file)])
    db = Database(configuration)
    with db.write as before:
        pass
    old_pool = db._current().roles["write"][0]
    configuration.reload()
    assert db._current().roles["write"][0] is old_pool
    config_file.write_text(
        '{"database": {"module": "sqlite3", "write": ["%s"]}}' % (tmp_path / "b.db")
    )
    configuration.reload()
    assert old_pool.closed
    assert not is_alive(before)
    with db.write as after:
        assert after is not before
        path = after.execute("PRAGMA database_list").fetchone()[2]
    assert path.endswith("b.db")
    db.close()


def test_a_connection_in_use_during_a_reload_is_closed_when_given_back(
    sqlite_db: Database, tmp_path: Any
) -> None:
    with sqlite_db.write as conn:
        sqlite_db.config.set("database.write", [str(tmp_path / "other.db")])
        sqlite_db.check()
    assert not is_alive(conn)


def test_a_database_nobody_uses_stops_listening(tmp_path: Any) -> None:
    configuration = Configuration.from_mapping(
        {"database": {"module": "sqlite3", "write": [str(tmp_path / "a.db")]}}
    )
    db = Database(configuration)
    db.check()
    assert len(configuration._listeners) == 1
    del db
    gc.collect()
    configuration.reload()
    assert configuration._listeners == []


def test_a_concurrent_first_use_builds_the_pools_once(tmp_path: Any) -> None:
    section = {"module": "sqlite3", "write": [str(tmp_path / "a.db")]}
    db = Database({"database": section})
    results: list[Any] = []
    with db._lock:
        thread = threading.Thread(target=lambda: results.append(db._current()))
        thread.start()
        time.sleep(0.1)  # the thread now waits for the lock
        db._snapshot = built = _Snapshot.build(section)
    thread.join()
    assert results == [built]
    db.close()
    db.close()


# -- pinned transactions (the testing plugin's db_transaction) ----------------


def test_a_pinned_transaction_is_rolled_back_and_shared_by_both_roles(
    backend: Backend, make_db: Any
) -> None:
    table = backend.table()
    db = make_db(backend.config())
    insert = backend.sql(f"INSERT INTO {table}(email) VALUES (%s)")
    with db.pinned_transaction() as pinned:
        with db.write as conn:
            conn.cursor().execute(insert, ("kept@x",))
            conn.commit()
            conn.close()

        def insert_then_fail() -> None:
            with db.write as conn:
                conn.cursor().execute(insert, ("undone@x",))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            insert_then_fail()
        with db.write as conn:
            conn.cursor().execute(insert, ("rolled-back@x",))
            conn.rollback()
        with db.read as conn:
            conn.cursor().execute(insert, ("read-only@x",))
            with db.write:
                pass
        cur = pinned.cursor()
        cur.execute(f"SELECT email FROM {table}")
        assert [row[0] for row in cur.fetchall()] == ["kept@x"]
        assert "pinned" in repr(conn)
    assert backend.count(table) == 0


def test_a_pinned_transaction_cannot_nest(sqlite_db: Database) -> None:
    with sqlite_db.write, pytest.raises(RuntimeError, match="outside any read"):
        sqlite_db.pinned_transaction().__enter__()


def test_a_reload_that_removes_the_database_section_drops_the_pools(tmp_path: Any) -> None:
    config_file = tmp_path / "kiln.json"
    config_file.write_text(
        '{"database": {"module": "sqlite3", "write": ["%s"]}}' % (tmp_path / "a.db")
    )
    configuration = Configuration([str(config_file)], environ={})
    db = Database(configuration)
    with db.write as before:
        pass
    config_file.write_text("{}")
    assert configuration.reload() is True
    assert configuration.last_error is None
    assert not is_alive(before)
    assert repr(db) == "<Database (not used yet)>"


def test_a_pool_nobody_uses_closes_its_idle_connections(tmp_path: Any) -> None:
    pool = ServerPool(sqlite3, str(tmp_path / "a.db"), size=2, connect_timeout=1)
    connection = pool.checkout()
    pool.checkin(connection)
    del pool
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        connection.execute("SELECT 1")
