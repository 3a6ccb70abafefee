"""Throwaway PostgreSQL clusters (primary + streaming replicas) from local binaries.

The suite's shared server (``tests/services.py``) cannot lose its primary,
lag or refuse writes; replication and failover tests need servers they own.
This module starts them from the PostgreSQL server binaries
(``initdb``, ``postgres``, ``pg_basebackup``) in a temporary directory, on
free loopback ports, and removes everything afterwards::

    with Cluster.start_primary() as primary:
        replica = primary.start_replica()
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (n int)")
        replica.wait_until_caught_up()
        primary.restart(mode="immediate")  # a crash; committed data survives
    # every postgres process of both clusters has exited, the directory is gone

PostgreSQL refuses to run as root: when the tests run as root, every server
binary runs as the ``postgres`` OS user (its data directory is chowned to it).
A primary is set up for streaming replication (``wal_level = replica``,
``max_wal_senders``, ``pg_hba`` trusting ``127.0.0.1`` for replication) and
for speed (``fsync = off``: data survives a crash of the server, not of the
machine). Each server's ``cluster_name`` is unique and appears in every one
of its process titles: :meth:`Cluster.kill` and the teardown find every
backend by it (``pgrep -f <name>``). A test run killed without teardown
leaves its servers running: the next run's first cluster kills them
(:func:`sweep_orphans`). Primaries are copies of one ``initdb`` per process
(~0.05 s instead of ~1 s each), so they share a ``system_identifier``.

As a pytest plugin (listed in ``tests/conftest.py``) it gives the fixtures:

=================  =========  ===================================================
``pg_primary``     session    a running primary (:class:`Cluster`)
``pg_replica``     session    a streaming replica of ``pg_primary``
``make_pg_primary`` function  a factory of fresh primaries, torn down after the
                              test (for tests that stop, crash or kill servers)
=================  =========  ===================================================

The binaries are looked up in ``--pg-bindir`` (env ``KILN_TEST_PG_BINDIR``),
then the newest ``/usr/lib/postgresql/*/bin``, then ``pg_config --bindir``.
When they are missing a test using these fixtures is skipped with the reason,
except under ``CI=true`` where it fails (the policy of ``tests/services.py``).
Tests using them are marked ``postgresql``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.services import in_ci

BINARIES = ("initdb", "postgres", "pg_basebackup")
OS_USER = "postgres"
_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_BIND_FAILED = re.compile(r"could not (bind|create any TCP/IP sockets)|Address already in use")

#: postgresql.conf lines of every primary (replicas copy them with the data).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "'128MB'",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    # A replica whose primary restarted reconnects within this delay.
    "wal_retrieve_retry_interval": "'100ms'",
    "fsync": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "60",
    "timezone": "'UTC'",
    "log_min_messages": "warning",
}

_HBA = """\
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


class ClusterError(RuntimeError):
    """A server did not start, stop or catch up; the message quotes its log."""


def find_bindir(configured: str | None = None) -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_basebackup``, if any."""
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    else:
        versions = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versions, key=lambda p: _version_key(p.parent.name), reverse=True)
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
                )
                candidates.append(Path(out.stdout.strip()))
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in BINARIES):
            return candidate
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user() -> str | None:
    """``postgres`` when running as root (PostgreSQL refuses root), else ``None`` (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise ClusterError(
            f"Running as root and there is no {OS_USER!r} OS user to run PostgreSQL as. "
            f"Create it (`useradd --system {OS_USER}`) or run the tests as another user."
        ) from None
    return OS_USER


def _make_root(user: str | None) -> Path:
    """A fresh ``kiln-pg-*`` temp directory owned by ``user``, naming its owner process."""
    if not _swept:
        _swept.append(True)
        sweep_orphans()
    root = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
    (root / "owner").write_text(str(os.getpid()))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    return root


_swept: list[bool] = []


def _cluster_name(root: Path) -> str:
    return f"kiln_pg_{root.name.removeprefix('kiln-pg-')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> list[Path]:
    """Kill the servers of test processes that died without teardown; remove their directories.

    A test run killed hard (SIGKILL, a timeout) cannot stop its servers; the
    next run that starts a cluster does, once, for every ``kiln-pg-*``
    directory whose owner process is gone. Returns the directories removed.
    """
    removed = []
    for owner_file in Path(tempfile.gettempdir()).glob("kiln-pg-*/owner"):
        root = owner_file.parent
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for pid in _pids_named(_cluster_name(root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _pids_named(name: str) -> list[int]:
    """Live (non-zombie) processes whose command line or title contains ``name``.

    A postmaster's children call ``setsid()``, so neither its process group
    nor its session reaches them; their titles (``postgres: <cluster_name>:
    checkpointer``) do, as the postmaster's ``-c cluster_name=`` does.
    """
    found = []
    needle = name.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if needle not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def _run(bindir: Path, user: str | None, cwd: Path, binary: str, *args: str) -> None:
    """Run a server binary as ``user``; raise :class:`ClusterError` with its output on failure."""
    done = subprocess.run(
        [str(bindir / binary), *args],
        cwd=cwd,
        user=user,
        group=None if user is None else pwd.getpwnam(user).pw_gid,
        extra_groups=None if user is None else [],
        env={**_clean_env(), "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ClusterError(f"{binary} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


_templates: dict[tuple[Path, str | None], Path] = {}


def _template(bindir: Path, user: str | None) -> Path:
    """The data directory of a fresh ``initdb``, made once per process and binaries.

    Primaries are copies of it, so they share one ``system_identifier``
    (harmless: a replica still streams from the primary it was cloned from).
    """
    key = (bindir, user)
    if key not in _templates:
        root = _make_root(user)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _run(
            bindir,
            user,
            root,
            "initdb",
            "--pgdata",
            str(root / "data"),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        )
        _templates[key] = root / "data"
    return _templates[key]


def _copy_tree(source: Path, target: Path) -> None:
    """``cp -a``: owners and modes kept (PostgreSQL insists on a 0700 data directory)."""
    subprocess.run(["cp", "-a", str(source), str(target)], check=True, timeout=60)


class Cluster:
    """One PostgreSQL server (a primary or a streaming replica) in its own temp directory.

    Build with :meth:`start_primary` and :meth:`start_replica`; close with
    :meth:`close` (or use it as a context manager), which closes its replicas
    too and removes the directories.
    """

    def __init__(
        self,
        bindir: Path,
        root: Path,
        port: int,
        *,
        user: str | None,
        primary: Cluster | None = None,
        auto_port: bool = False,
    ) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.user = user
        self.primary = primary
        self.replicas: list[Cluster] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._auto_port = auto_port
        self._closed = False

    # -- construction -----------------------------------------------------------

    @classmethod
    def start_primary(
        cls,
        port: int | None = None,
        *,
        bindir: Path | str | None = None,
        settings: dict[str, str] | None = None,
    ) -> Cluster:
        """A fresh cluster started as a primary on ``port`` (default: a free one).

        ``settings`` are extra ``postgresql.conf`` lines (values as written in
        the file: ``{"synchronous_commit": "off"}``); replicas inherit them.
        """
        found = find_bindir(str(bindir) if bindir else None)
        if found is None:
            raise ClusterError(
                f"PostgreSQL server binaries ({', '.join(BINARIES)}) not found"
                f"{f' in {bindir}' if bindir else ''}. Install the PostgreSQL server package."
            )
        user = _os_user()
        root = _make_root(user)
        cluster = cls(found, root, port or free_port(), user=user, auto_port=port is None)
        try:
            # A copy of one initdb per process: initdb costs ~1 s, a copy ~0.05 s.
            _copy_tree(_template(found, user), cluster.data)
            lines = {**BASE_SETTINGS, **(settings or {})}
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.write("\n# kiln tests/pgcluster.py\n")
                conf.writelines(f"{key} = {value}\n" for key, value in lines.items())
            (cluster.data / "pg_hba.conf").write_text(_HBA)
            cluster.start()
        except BaseException:
            cluster.close()
            raise
        return cluster

    def start_replica(self, port: int | None = None) -> Cluster:
        """A hot-standby replica streaming from this server (``pg_basebackup -R``), started."""
        root = _make_root(self.user)
        replica = Cluster(
            self.bindir,
            root,
            port or free_port(),
            user=self.user,
            primary=self,
            auto_port=port is None,
        )
        self.replicas.append(replica)
        try:
            replica._run(
                "pg_basebackup",
                "--pgdata",
                str(replica.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--username",
                "postgres",
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
                "--no-sync",
                "--no-manifest",
            )
            replica.start()
        except BaseException:
            replica.close()
            raise
        return replica

    # -- properties -------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def name(self) -> str:
        """``cluster_name``: it appears in every process title of this server."""
        return _cluster_name(self.root)

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The postmaster and every live process it started (found by ``cluster_name``)."""
        return _pids_named(self.name)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` on this primary; its URL."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    # -- processes ----------------------------------------------------------------

    def _run(self, binary: str, *args: str) -> None:
        _run(self.bindir, self.user, self.root, binary, *args)

    def start(self, timeout: float = 30.0) -> None:
        """Start the postmaster and wait until it accepts connections."""
        if self.running:
            return
        for _ in range(5):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except ClusterError:
                log = self.log.read_text(errors="replace")
                if not (self._auto_port and _BIND_FAILED.search(log)):
                    raise
                self.port = free_port()  # lost a race for the port: take another
        raise ClusterError(f"could not find a free port for {self.name}")

    def _spawn(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    f"cluster_name={self.name}",
                ],
                cwd=self.root,
                user=self.user,
                group=None if self.user is None else pwd.getpwnam(self.user).pw_gid,
                extra_groups=None if self.user is None else [],
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal is not for it
            )
        if self.user is not None:
            with contextlib.suppress(OSError):
                os.chown(self.log, pwd.getpwnam(self.user).pw_uid, -1)

    def _wait_ready(self, timeout: float) -> None:
        """Wait for ``postmaster.pid`` to say ``ready``/``standby`` (as ``pg_ctl -w`` does).

        Connecting instead would hang on a port someone else listens on.
        """
        deadline = time.monotonic() + timeout
        state = "not started"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                raise ClusterError(f"{self.name} exited at start:\n{self._log_tail()}")
            with contextlib.suppress(OSError):
                lines = (self.data / "postmaster.pid").read_text().splitlines()
                # pid, data dir, start time, port, socket dir, host, shmem key, state
                if len(lines) >= 8 and lines[0] == str(self.process.pid):
                    state = lines[7].strip()
                    if state in ("ready", "standby"):
                        return
            time.sleep(0.02)
        self.kill()
        raise ClusterError(f"{self.name} not ready in {timeout:g}s ({state}):\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut down like ``pg_ctl stop -m <mode>`` (smart, fast, immediate) and wait.

        ``immediate`` is a crash for the server: the next start recovers from
        the WAL. A server that does not stop in ``timeout`` is killed.
        """
        if mode not in _SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_SIGNALS)}, not {mode!r}")
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(_SIGNALS[mode])
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap()
        self.process = None

    def restart(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """:meth:`stop` with ``mode``, then :meth:`start` on the same port."""
        self.stop(mode, timeout)
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started (a hard crash)."""
        process = self.process
        if process is None:
            return
        for pid in [process.pid, *self.pids()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)
        self._reap()
        self.process = None

    def _reap(self, timeout: float = 10.0) -> None:
        """Wait until no process of this server is left; SIGKILL stragglers."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.02)

    # -- replication ---------------------------------------------------------------

    def wait_until_caught_up(self, timeout: float = 15.0) -> None:
        """On a replica: wait until it replayed everything its primary wrote so far."""
        if self.primary is None:
            raise ClusterError(f"{self.name} is a primary: only a replica catches up")
        with psycopg.connect(self.primary.url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout
        replayed = None
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(psycopg.OperationalError),
                psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn,
            ):
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn()::text,"
                    " pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0",
                    (target,),
                ).fetchone()
                assert row is not None
                replayed = row[0]
                if row[1]:
                    return
            time.sleep(0.02)
        raise ClusterError(
            f"{self.name} replayed up to {replayed}, not {target}, in {timeout:g}s:\n"
            f"{self._log_tail()}"
        )

    # -- teardown -------------------------------------------------------------------

    def close(self) -> None:
        """Stop this server and its replicas (killed if they hang); remove their directories."""
        if self._closed:
            return
        self._closed = True
        try:
            for replica in self.replicas:
                replica.close()
            try:
                self.stop("fast", timeout=15)
            finally:
                self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.primary is not None and self in self.primary.replicas:
                self.primary.replicas.remove(self)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "replica" if self.primary else "primary"
        return f"<Cluster {role} {self.name} port={self.port} running={self.running}>"


def _clean_env() -> dict[str, str]:
    """Our environment without libpq's variables (they would redirect the tools)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


# -- pytest plugin -------------------------------------------------------------------

_FIXTURES = ("pg_primary", "pg_replica", "make_pg_primary")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("kiln services").addoption(
        "--pg-bindir",
        default=os.environ.get("KILN_TEST_PG_BINDIR"),
        help="directory of the PostgreSQL server binaries for throwaway clusters "
        "(env KILN_TEST_PG_BINDIR; default: the newest /usr/lib/postgresql/*/bin).",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in _FIXTURES):
            item.add_marker(pytest.mark.postgresql)


def require_bindir(config: pytest.Config) -> Path:
    """The binaries' directory; skip (or fail under CI) when they are missing."""
    configured = config.getoption("--pg-bindir")
    found = find_bindir(configured)
    problem = None
    if found is None:
        where = configured or "/usr/lib/postgresql/*/bin or pg_config --bindir"
        problem = f"PostgreSQL server binaries ({', '.join(BINARIES)}) not found in {where}"
    elif os.geteuid() == 0:
        try:
            _os_user()
        except ClusterError as exc:
            problem = str(exc)
    if problem:
        if in_ci():
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(f"{problem} (install the PostgreSQL server, or pass --pg-bindir)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def pg_primary(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    with Cluster.start_primary(bindir=require_bindir(pytestconfig)) as primary:
        yield primary


@pytest.fixture(scope="session")
def pg_replica(pg_primary: Cluster) -> Iterator[Cluster]:
    with pg_primary.start_replica() as replica:
        yield replica


@pytest.fixture
def make_pg_primary(pytestconfig: pytest.Config) -> Iterator[Callable[..., Cluster]]:
    bindir = require_bindir(pytestconfig)
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster.start_primary(bindir=bindir, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@contextlib.contextmanager
def stopped(cluster: Cluster, longest: float = 15.0) -> Iterator[None]:
    """SIGSTOP every process of ``cluster`` (a hung server); always resumed, at
    the latest after ``longest`` seconds (a test that hangs fails instead)."""
    pids = cluster.pids()

    def resume() -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    safety = threading.Timer(longest, resume)
    safety.start()
    try:
        yield
    finally:
        safety.cancel()
        resume()
