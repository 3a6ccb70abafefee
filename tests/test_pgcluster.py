from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests import pgcluster
from tests.pgcluster import Cluster, ClusterError


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _pgrep(name: str) -> str:
    done = subprocess.run(["pgrep", "-af", name], capture_output=True, text=True, check=False)
    return done.stdout


def test_a_write_on_the_primary_appears_on_the_replica(pg_primary, pg_replica):
    table = _table()
    with psycopg.connect(pg_primary.url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
        conn.execute(f"INSERT INTO {table} VALUES (1), (2)")
    pg_replica.wait_until_caught_up()
    with psycopg.connect(pg_replica.url) as conn:
        assert conn.execute(f"SELECT n FROM {table} ORDER BY n").fetchall() == [(1,), (2,)]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_the_primary_streams_to_its_replica_with_fsync_off(pg_primary, pg_replica):
    with psycopg.connect(pg_primary.url) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("replica",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        senders = conn.execute("SELECT state FROM pg_stat_replication").fetchall()
        assert ("streaming",) in senders
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert pg_primary.url == f"postgresql://postgres@127.0.0.1:{pg_primary.port}/postgres"
    assert pg_replica.primary is pg_primary
    assert pg_replica in pg_primary.replicas


def test_a_replica_refuses_writes(pg_replica):
    with (
        psycopg.connect(pg_replica.url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute(f"CREATE TABLE {_table()} (n int)")


def test_an_immediate_restart_keeps_committed_data_and_the_replica_resumes(make_pg_primary):
    primary = make_pg_primary()
    replica = primary.start_replica()
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    old_pids = primary.pids()
    primary.restart(mode="immediate")
    assert not set(old_pids) & set(primary.pids())
    with psycopg.connect(primary.url, autocommit=True) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        conn.execute("INSERT INTO kept VALUES (2)")
    replica.wait_until_caught_up()
    with psycopg.connect(replica.url) as conn:
        assert conn.execute("SELECT n FROM kept ORDER BY n").fetchall() == [(1,), (2,)]


def test_kill_crashes_every_process_and_start_recovers_committed_data(make_pg_primary):
    primary = make_pg_primary()
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    assert len(primary.pids()) > 1  # the postmaster and its auxiliary processes
    primary.kill()
    assert not primary.running
    assert primary.pids() == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(primary.url, connect_timeout=2)
    primary.start()
    with psycopg.connect(primary.url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_closing_a_primary_stops_its_replicas_and_leaves_no_process_or_directory(
    make_pg_primary,
):
    primary = make_pg_primary()
    replica = primary.start_replica()
    with psycopg.connect(replica.url, autocommit=True) as conn:
        conn.execute("SELECT 1")
    names = [primary.name, replica.name]
    pids = primary.pids() + replica.pids()
    roots = [primary.root, replica.root]
    assert all(_pgrep(name) for name in names)
    primary.close()
    for name in names:
        assert _pgrep(name) == ""
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert not any(root.exists() for root in roots)
    assert primary.replicas == []
    primary.close()  # twice is harmless


def test_servers_of_a_test_process_killed_hard_are_swept_by_the_next_one(pg_primary):
    script = (
        "import os, signal\n"
        "from tests.pgcluster import Cluster\n"
        "cluster = Cluster.start_primary()\n"
        "print(cluster.name, cluster.root, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    name, root = done.stdout.split()
    assert _pgrep(name)  # orphaned: its owner died without teardown
    removed = pgcluster.sweep_orphans()
    assert Path(root) in removed
    assert not Path(root).exists()
    assert _pgrep(name) == ""
    assert pg_primary.root not in removed
    assert pg_primary.running


def test_a_stopped_server_is_not_running_and_restarts_on_its_port(make_pg_primary):
    primary = make_pg_primary()
    port = primary.port
    primary.stop()
    assert not primary.running
    assert primary.pids() == []
    primary.stop()  # already stopped: nothing to do
    primary.kill()
    primary.start()
    primary.start()  # already running: nothing to do
    assert primary.port == port
    assert primary.running
    database_url = primary.create_database("made_here")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("made_here",)


def test_a_primary_takes_another_port_when_its_free_port_was_taken_meanwhile(
    make_pg_primary, monkeypatch
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real_free_port = pgcluster.free_port
        monkeypatch.setattr(pgcluster, "free_port", lambda: next(ports, None) or real_free_port())
        primary = make_pg_primary()
    assert primary.port != busy
    assert "could not" in primary.log.read_text()


def test_an_explicit_port_in_use_fails_with_the_servers_log(make_pg_primary):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ClusterError, match="exited at start"):
            make_pg_primary(port=taken.getsockname()[1])


def test_settings_reach_the_primary_and_its_replica(make_pg_primary):
    primary = make_pg_primary(settings={"work_mem": "'7MB'"})
    replica = primary.start_replica()
    for cluster in (primary, replica):
        with psycopg.connect(cluster.url) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)


def test_only_a_replica_catches_up(pg_primary, request):
    assert request.node.get_closest_marker("postgresql") is not None
    with pytest.raises(ClusterError, match="only a replica catches up"):
        pg_primary.wait_until_caught_up()


def test_stop_rejects_an_unknown_mode(pg_primary):
    with pytest.raises(ValueError, match="immediate"):
        pg_primary.stop("abrupt")
    assert pg_primary.running


def test_missing_binaries_raise_a_clear_error(tmp_path):
    assert pgcluster.find_bindir(str(tmp_path)) is None
    with pytest.raises(ClusterError, match=r"binaries .* not found in"):
        Cluster.start_primary(bindir=tmp_path)


def test_missing_binaries_skip_locally_and_fail_under_ci(pytestconfig, monkeypatch, tmp_path):
    monkeypatch.setattr(pytestconfig.option, "pg_bindir", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="--pg-bindir"):
        pgcluster.require_bindir(pytestconfig)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and PostgreSQL server binaries"):
        pgcluster.require_bindir(pytestconfig)
