"""Requests/s of kiln's resource endpoints beside the bare floor and Kinto, in one run.

::

    .venv/bin/python bench/resources.py --duration 5
    .venv/bin/python bench/resources.py --only get,list --clients 8 --records 2000
    .venv/bin/python bench/resources.py --database postgresql --duration 5
    .venv/bin/python bench/resources.py --database postgresql --targets kiln-shareable,kinto

Starts one gunicorn server per target on loopback (``-w 2 --threads 4``,
ARCHITECTURE's setting, the same for every target), each serving records at
``/v1/buckets/bench/collections/items/records``:

- ``floor``: ``bench.floor_app:application``, the bare floor (same schema,
  same SQL, same transactions, no framework); it answers 401 to a request
  without ``Authorization: Basic`` credentials and checks nothing else;
- ``kiln``: ``kiln.wsgi:application`` with :mod:`bench.kiln_resources`, a
  plain ``Resource`` whose ``record.read_principals``, ``write_principals``
  and ``create_principals`` are ``["system.Authenticated"]`` (resource-level
  principals, nothing stored per record);
- ``kiln-shareable``: ``kiln.wsgi:application`` with
  :mod:`bench.kiln_shareable`, ``ShareableResource`` buckets, collections
  and records (per-record permissions, parents checked and inherited, as in
  Kinto);
- ``kiln-metrics`` (only when asked for): the ``kiln`` target with metrics
  on (``docs/observability.md``): StatsD to a loopback socket the benchmark
  holds and never reads, and Prometheus (``PROMETHEUS_MULTIPROC_DIR``
  shared by the workers); ``--targets kiln,kiln-metrics`` measures what
  metrics cost, side by side;
- ``kinto`` (``--database postgresql`` only): Kinto from
  ``bench/.kinto-venv`` (:mod:`bench.kinto_env`), ``gunicorn --paste
  kinto.ini``, storage, permissions and cache on PostgreSQL.

Every request carries the HTTP Basic credentials of one bench user, the same
for every target; kiln and Kinto run ``basicauth`` with one fixed HMAC
secret. The bench user owns the bench bucket and collection (kiln-shareable,
Kinto) and holds a ``write`` ACE on every seeded record, as Kinto itself
writes them on create.

With ``--database sqlite`` each server has its own SQLite file in a
temporary directory. With ``--database postgresql`` each has its own
database on the ``--postgresql-url`` server: ``<name>_floor``,
``<name>_kiln``, ``<name>_kiln_shareable``, ``<name>_kinto`` (``<name>`` is
the URL's database, ``kiln_bench`` by default), dropped and created afresh
by this script, dropped at the end unless ``--keep``.

Every target gets the same ``--records`` records (same ids, same data),
written before the runs: straight into the floor's and Kinto's tables (and
Kinto's ACE table), and through kiln's own storage and permission backends.
Then each operation runs against each target in turn: ``--clients`` threads
with one keep-alive connection each for ``--duration`` seconds (or
``--requests`` requests), then one client for ``--latency-requests``
requests (p50/p99). Everything is bounded; servers and temporary files are
removed on exit, Ctrl-C included.

Operations, in the order they run: ``get`` (random record), ``list``
(``edible=true&_sort=-size&_limit=20``), ``mixed`` (:data:`MIX`: each
request drawn at random, 50 % get, 20 % list, 15 % create, 10 % patch, 5 %
delete, each client reading, patching and deleting only its own records,
those it created included; it runs before the creates so that its lists see
the seeded collection on every target), ``create``, ``patch`` (``If-Match``
with the record's current ETag; each client owns its records so no 412 is
expected), ``batch`` (25 creates in one ``POST /v1/batch``), ``delete``
(each client owns its records and stops when it has none left). An error is
any unexpected status (or a batch sub-response that is not 201) or a
transport error. The report lists them in issue #11's order.

The client runs on the same machine: its CPU time and the servers' (master
and workers, from ``/proc``) are reported per run, as cores used; with
PostgreSQL, so is the CPU of every ``postgres`` process on the machine; and
after each run, the largest peak RSS (``VmHWM``) of the target's gunicorn
workers. ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson
import urllib3
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/resources.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench import floor_app, kinto_env  # noqa: E402

#: In the order they run: ``mixed`` before the creates, so that its lists see the
#: seeded collection on every target (not one grown by each target's own create
#: and batch throughput); ``delete`` last.
OPERATIONS = ("get", "list", "mixed", "create", "patch", "batch", "delete")
#: The order of the report's rows (issue #11's table).
REPORT_ORDER = ("get", "list", "create", "patch", "delete", "batch", "mixed")
#: Every target, in the order they run.
TARGETS = ("floor", "kiln", "kiln-metrics", "kiln-shareable", "kinto")
#: The targets run when ``--targets`` names none.
DEFAULT_TARGETS = ("floor", "kiln", "kiln-shareable", "kinto")
#: The kiln targets and the views module each serves.
KILN_VIEWS = {
    "kiln": "bench.kiln_resources",
    "kiln-metrics": "bench.kiln_resources",
    "kiln-shareable": "bench.kiln_shareable",
}
#: ``mixed``: what share of its requests (in %) each operation gets.
MIX = (("get", 50), ("list", 20), ("create", 15), ("patch", 10), ("delete", 5))
LIST_QUERY = "?edible=true&_sort=-size&_limit=20"
DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/kiln_bench"
BATCH_SIZE = 25
CLK_TCK = os.sysconf("SC_CLK_TCK")

RECORDS_PATH = floor_app.RECORDS_PATH
BATCH_PATH = RECORDS_PATH.removeprefix(floor_app.PREFIX)  # a batch sub-request's path
BUCKET_URI = f"/buckets/{floor_app.BUCKET}"
#: The bench user, the same for every target, and its credentials.
USER, PASSWORD = "bench", "bench-password"
AUTH_HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
}
JSON_HEADERS = {**AUTH_HEADERS, "Content-Type": "application/json", "Accept": "application/json"}
#: ``basicauth``'s HMAC key, for kiln and Kinto alike (so the bench user has one id).
HMAC_SECRET = "kiln-bench-basicauth-secret-0123456789abcdef"

#: kiln's config template (``--kiln-config`` replaces it); :func:`kiln_config` adds the rest.
KILN_CONFIG = """\
project:
  name: kiln-bench
  version: "1.0.0"
storage:
  backend: {backend}
  url: {url}
"""


# -- servers ------------------------------------------------------------------


@dataclass
class Server:
    """One target under gunicorn: its WSGI app and database, what it holds."""

    name: str
    app: list[str]  # gunicorn's last arguments: "module:app", or "--paste", "x.ini"
    env: dict[str, str]
    log: Path
    db: Path | None = None  # its SQLite file (--database sqlite)
    url: str = ""  # its PostgreSQL database (--database postgresql)
    python: str = sys.executable
    config: dict[str, Any] = field(default_factory=dict)  # kiln's configuration
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    ids: list[str] = field(default_factory=list)
    etags: dict[str, int] = field(default_factory=dict)

    def start(self, workers: int, threads: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        command = [
            self.python,
            "-m",
            "gunicorn",
            "--bind",
            f"fd://{fd}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--log-level",
            "warning",
            "--graceful-timeout",
            "3",
            "--chdir",
            str(ROOT),
            *self.app,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                start_new_session=True,
            )
        sock.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", self.port, maxsize=1, retries=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                absent = f"{RECORDS_PATH}/{uuid.uuid4()}"
                pool.request("GET", absent, headers=AUTH_HEADERS, timeout=2.0)
                # Warm every worker thread (imports, connections, statement cache).
                for _ in range(50):
                    pool.request("GET", absent, headers=AUTH_HEADERS, timeout=2.0)
                return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {timeout:.0f}s")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request as the bench user; the decoded JSON answer (an error unless 2xx)."""
        pool = urllib3.HTTPConnectionPool("127.0.0.1", self.port, retries=False, timeout=30.0)
        try:
            response = pool.request(
                method,
                path,
                body=None if body is None else orjson.dumps(body),
                headers=JSON_HEADERS,
            )
        finally:
            pool.close()
        if not 200 <= response.status < 300:
            raise RuntimeError(
                f"{self.name}: {method} {path}: {response.status} {response.data[:300]!r}"
            )
        return orjson.loads(response.data)

    def pids(self) -> list[int]:
        """The gunicorn master, then its workers."""
        if self.process is None:
            return []
        master = self.process.pid
        found = [master]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    found.append(int(entry.name))
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def worker_memory(self) -> dict[int, tuple[int, int]]:
        """``{pid: (VmHWM, VmRSS)}`` of each gunicorn worker, in KiB."""
        memory = {}
        for pid in self.pids()[1:]:
            with contextlib.suppress(OSError, ValueError):
                status = {
                    key: value.split()[0]
                    for key, _, value in (
                        line.partition(":")
                        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    )
                    if key in ("VmHWM", "VmRSS")
                }
                memory[pid] = (int(status["VmHWM"]), int(status["VmRSS"]))
        return memory

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def postgres_cpu_seconds() -> float:
    """CPU time of every ``postgres`` process on the machine (the server and its backends)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if stat.split(" (", 1)[1].startswith("postgres)"):
                fields = stat.rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# -- seeding --------------------------------------------------------------------

#: The seeded records: (id, data), identical for every target.
Dataset = list[tuple[str, dict[str, Any]]]


def dataset(records: int, rng: random.Random) -> Dataset:
    return [
        (
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            {"name": f"item-{i}", "size": rng.randint(1, 1000), "edible": i % 2 == 0},
        )
        for i in range(records)
    ]


def record_uri(object_id: str) -> str:
    """A record's permission object id (its URI without the version prefix)."""
    return f"{floor_app.PARENT_ID}/records/{object_id}"


def seed(server: Server, records: Dataset) -> None:
    """Write ``records`` into ``server``'s database, before any request; note ids and ETags."""
    start = time.time_ns() // 1_000_000 - len(records)
    if server.name == "floor" and server.db is not None:
        _seed_floor_sqlite(server.db, records, start)
    elif server.name == "floor":
        _seed_floor_postgresql(server.url, records, start)
    elif server.name == "kinto":
        _seed_kinto(server, records, start)
    else:
        owner = user_id(server)
        shareable = server.name == "kiln-shareable"
        server.etags.update(seed_kiln(server.config, records, owner, shareable))
        server.ids.extend(object_id for object_id, _ in records)
        return
    server.ids.extend(object_id for object_id, _ in records)
    server.etags.update((object_id, start + i) for i, (object_id, _) in enumerate(records))


def bench_user_id(config: Mapping[str, Any]) -> str:
    """The bench user's prefixed id under kiln ``config``'s policies, in process."""
    from kiln.auth import authenticate, load_policies
    from kiln.config import Configuration

    identity = authenticate(load_policies(Configuration.from_mapping(dict(config))), AUTH_HEADERS)
    assert identity is not None  # basicauth: any pair is a user
    return identity.prefixed_id


def user_id(server: Server) -> str:
    """The bench user's id on ``server`` (kiln or Kinto), from its hello view."""
    return str(server.request("GET", f"{floor_app.PREFIX}/")["user"]["id"])


def _seed_floor_sqlite(db: Path, records: Dataset, start: int) -> None:
    """Straight into the floor's SQLite file (its server created the tables).

    The collection timestamp is set past the last record's.
    """
    collection = (floor_app.RESOURCE, floor_app.PARENT_ID)
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
            " VALUES (?, ?, ?, ?, 0, ?)",
            [
                (*collection, object_id, start + i, orjson.dumps(data).decode())
                for i, (object_id, data) in enumerate(records)
            ],
        )
        conn.execute(
            "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
            " VALUES (?, ?, ?) ON CONFLICT (resource_name, parent_id)"
            " DO UPDATE SET last_modified = excluded.last_modified",
            (*collection, start + len(records)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _seed_floor_postgresql(url: str, records: Dataset, start: int) -> None:
    import psycopg

    collection = (floor_app.RESOURCE, floor_app.PARENT_ID)
    with psycopg.connect(url, autocommit=True) as conn:
        floor_app.create_postgresql_schema(conn)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
                " VALUES (%s, %s, %s, %s, FALSE, %s::jsonb)",
                [
                    (*collection, object_id, start + i, orjson.dumps(data).decode())
                    for i, (object_id, data) in enumerate(records)
                ],
            )
            cur.execute(
                "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
                " VALUES (%s, %s, %s) ON CONFLICT (resource_name, parent_id)"
                " DO UPDATE SET last_modified = excluded.last_modified",
                (*collection, start + len(records)),
            )
        conn.execute("VACUUM ANALYZE records")


def seed_kiln(
    config_mapping: Mapping[str, Any], records: Dataset, owner: str, shareable: bool
) -> dict[str, int]:
    """Through kiln's own storage and permission backends, in one unit of work.

    ``shareable`` (:mod:`bench.kiln_shareable`): also the bench bucket and
    collection, and ``write`` ACEs for ``owner`` on them and on every
    record. Returns each record's ETag.
    """
    from kiln.config import Configuration
    from kiln.permission import load_permission
    from kiln.storage import load_storage

    config = Configuration.from_mapping(dict(config_mapping))
    storage = load_storage(config)
    permission = load_permission(config) if shareable else None
    etags = {}
    try:
        storage.initialize_schema()
        with storage.transaction(), contextlib.ExitStack() as stack:
            if permission is not None:
                permission.initialize_schema()
                stack.enter_context(permission.transaction())
                storage.create("bucket", "", {"id": floor_app.BUCKET})
                storage.create("collection", BUCKET_URI, {"id": floor_app.COLLECTION})
                for uri in (BUCKET_URI, floor_app.PARENT_ID):
                    permission.replace_object_permissions(uri, {"write": [owner]})
            for object_id, data in records:
                record = storage.create("record", floor_app.PARENT_ID, {"id": object_id, **data})
                etags[object_id] = int(record["last_modified"])
                if permission is not None:
                    permission.replace_object_permissions(record_uri(object_id), {"write": [owner]})
    finally:
        storage.close()
        if permission is not None:
            permission.close()
    if config.setting("storage.backend") == "postgresql":
        # As for the floor and Kinto: planner statistics of the bulk load, which
        # autovacuum would gather a minute later.
        import psycopg

        with psycopg.connect(config.setting("storage.url"), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    return etags


def _seed_kinto(server: Server, records: Dataset, start: int) -> None:
    """The bench bucket and collection through Kinto's API (as the bench user, who
    owns them), the records and their ``write`` ACEs into its tables."""
    import psycopg

    server.request("PUT", f"{floor_app.PREFIX}{BUCKET_URI}", {})
    server.request(
        "PUT",
        f"{floor_app.PREFIX}{floor_app.PARENT_ID}",
        {"data": {"schema": floor_app.SCHEMA}},
    )
    owner = user_id(server)
    with psycopg.connect(server.url, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO objects (id, parent_id, resource_name, last_modified, data, deleted)"
                " VALUES (%s, %s, 'record', from_epoch(%s), %s::jsonb, FALSE)",
                [
                    (object_id, floor_app.PARENT_ID, start + i, orjson.dumps(data).decode())
                    for i, (object_id, data) in enumerate(records)
                ],
            )
            # What Kinto writes when a user creates a record: the creator may write it.
            cur.executemany(
                "INSERT INTO access_control_entries (object_id, permission, principal)"
                " VALUES (%s, 'write', %s)",
                [(record_uri(object_id), owner) for object_id, _ in records],
            )
        conn.execute("VACUUM ANALYZE objects")
        conn.execute("VACUUM ANALYZE access_control_entries")


# -- load ---------------------------------------------------------------------


class Request(NamedTuple):
    """One request of a client, and the status that counts as a success."""

    kind: str  # the operation it belongs to (one of MIX's for ``mixed``)
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    expected: int


def _new_record(rng: random.Random) -> dict[str, Any]:
    n = rng.getrandbits(32)
    return {"name": f"new-{n}", "size": n % 1000, "edible": bool(n & 1)}


class Client:
    """Makes the requests of one operation for one client, from its own ids.

    ``ids`` are the records this client alone patches and deletes (and, in
    ``mixed``, reads); it keeps them up to date: what it deletes leaves
    them (and goes to ``deleted``), what it creates in ``mixed`` joins them
    (and goes to ``created``).
    """

    def __init__(
        self, op: str, all_ids: list[str], etags: dict[str, int], ids: list[str], seed_: int
    ) -> None:
        self.op = op
        self.all_ids = all_ids
        self.etags = etags
        self.ids = list(ids)
        self.rng = random.Random(seed_)
        self.deleted: list[str] = []
        self.created: list[str] = []

    def request(self) -> Request | None:
        """The next request; ``None`` when this client has nothing left to do."""
        kind = self._draw() if self.op == "mixed" else self.op
        if kind in ("patch", "delete") and not self.ids:
            if self.op != "mixed":
                return None  # out of records: this client stops
            kind = "create"
        return self._make(kind)

    def _draw(self) -> str:
        roll = self.rng.randrange(100)
        for kind, weight in MIX:
            if roll < weight:
                return kind if kind != "get" or self.ids else "create"
            roll -= weight
        raise AssertionError("MIX adds up to 100")

    def _own(self) -> str:
        return self.ids[self.rng.randrange(len(self.ids))]

    def _make(self, kind: str) -> Request:
        rng = self.rng
        if kind == "get":
            ids = self.ids if self.op == "mixed" else self.all_ids
            object_id = ids[rng.randrange(len(ids))]
            return Request(kind, "GET", f"{RECORDS_PATH}/{object_id}", None, AUTH_HEADERS, 200)
        if kind == "list":
            return Request(kind, "GET", RECORDS_PATH + LIST_QUERY, None, AUTH_HEADERS, 200)
        if kind == "create":
            body = orjson.dumps({"data": _new_record(rng)})
            return Request(kind, "POST", RECORDS_PATH, body, JSON_HEADERS, 201)
        if kind == "batch":
            requests = [{"body": {"data": _new_record(rng)}} for _ in range(BATCH_SIZE)]
            body = orjson.dumps(
                {"defaults": {"method": "POST", "path": BATCH_PATH}, "requests": requests}
            )
            return Request(kind, "POST", f"{floor_app.PREFIX}/batch", body, JSON_HEADERS, 200)
        if kind == "patch":
            object_id = self._own()
            body = orjson.dumps({"data": {"size": rng.randint(1001, 10**9)}})
            headers = {**JSON_HEADERS, "If-Match": f'"{self.etags[object_id]}"'}
            return Request(kind, "PATCH", f"{RECORDS_PATH}/{object_id}", body, headers, 200)
        if kind == "delete":
            index = rng.randrange(len(self.ids))
            self.ids[index], self.ids[-1] = self.ids[-1], self.ids[index]
            object_id = self.ids.pop()
            self.deleted.append(object_id)
            return Request(kind, "DELETE", f"{RECORDS_PATH}/{object_id}", None, AUTH_HEADERS, 200)
        raise ValueError(kind)

    def check(self, request: Request, response: urllib3.BaseHTTPResponse) -> bool:
        """Whether ``response`` is a success; notes the ETags and ids it brings."""
        if response.status != request.expected:
            return False
        if request.kind == "patch":
            etag = response.headers.get("ETag", "")
            self.etags[request.path.rsplit("/", 1)[1]] = int(etag.strip('"'))
        elif request.kind == "create" and self.op == "mixed":
            record = orjson.loads(response.data)["data"]
            self.ids.append(record["id"])
            self.created.append(record["id"])
            self.etags[record["id"]] = int(record["last_modified"])
        elif request.kind == "batch":
            statuses = orjson.loads(response.data)["responses"]
            return all(sub["status"] == 201 for sub in statuses)
        return True


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cores: float = 0.0
    client_cores: float = 0.0
    db_cores: float = 0.0
    #: Largest VmHWM / VmRSS of the server's workers at the end of the run, in KiB.
    worker_hwm_kib: int = 0
    worker_rss_kib: int = 0
    first_error: str = ""
    error_kinds: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def as_dict(self, latencies: bool = False) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.rate, 2),
            "server_cores": round(self.server_cores, 3),
            "client_cores": round(self.client_cores, 3),
            "postgres_cores": round(self.db_cores, 3),
            "worker_peak_rss_mib": round(self.worker_hwm_kib / 1024, 1),
            "worker_rss_mib": round(self.worker_rss_kib / 1024, 1),
            "error_kinds": dict(self.error_kinds.most_common()),
            "first_error": self.first_error,
        }
        if latencies and self.latencies:
            figures.update((f"p{p}_ms", round(self.percentile(p), 3)) for p in (50, 90, 99))
            figures["mean_ms"] = round(sum(self.latencies) / len(self.latencies) * 1000, 3)
        return figures


def _worker(
    client: Client,
    port: int,
    start: threading.Barrier,
    deadline: list[float],
    budget: Iterator[int],
    result: Result,
    lock: threading.Lock,
    keep_latencies: bool,
) -> None:
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", port, maxsize=1, block=True, retries=False, timeout=30.0
    )
    done = errors = 0
    latencies: list[float] = []
    first_error = ""
    kinds: collections.Counter[str] = collections.Counter()
    start.wait()
    clock = time.perf_counter
    while clock() < deadline[0]:
        try:
            next(budget)
        except StopIteration:
            break
        request = client.request()
        if request is None:
            break
        began = clock()
        try:
            response = pool.urlopen(
                request.method,
                request.path,
                body=request.body,
                headers=request.headers,
                retries=False,
            )
            ok = client.check(request, response)
            if not ok:
                kinds[_error_kind(request, response)] += 1
                if not first_error:
                    detail = _error_detail(request, response)
                    first_error = f"{request.method} {request.path}: {detail}"
        except Exception as exc:  # a transport error counts as an error
            ok = False
            kinds[type(exc).__name__] += 1
            first_error = first_error or f"{request.method} {request.path}: {exc!r}"
        if keep_latencies:
            latencies.append(clock() - began)
        done += 1
        errors += not ok
    pool.close()
    with lock:
        result.requests += done
        result.errors += errors
        result.latencies.extend(latencies)
        result.first_error = result.first_error or first_error
        result.error_kinds.update(kinds)


def _error_detail(request: Request, response: urllib3.BaseHTTPResponse) -> str:
    """The status and body; for a batch answered 200, its first failed sub-response."""
    if response.status == request.expected:
        with contextlib.suppress(Exception):
            for sub in orjson.loads(response.data)["responses"]:
                if sub["status"] != 201:
                    return f"batch item {sub['status']} {orjson.dumps(sub.get('body'))[:300]!r}"
    return f"{response.status} {response.data[:300]!r}"


def _error_kind(request: Request, response: urllib3.BaseHTTPResponse) -> str:
    """``"create 503"``, or for a batch answered 200, its failed sub-responses' statuses."""
    if response.status != request.expected:
        return f"{request.kind} {response.status}"
    with contextlib.suppress(Exception):
        subs = orjson.loads(response.data)["responses"]
        failed = sorted({str(sub["status"]) for sub in subs if sub["status"] != 201})
        return f"batch item {'/'.join(failed)}"
    return "unexpected body"


class Outcome(NamedTuple):
    """What one client process brings back: its figures and its clients' records."""

    result: Result
    etags: dict[str, int]
    deleted: list[str]
    created: list[str]


def _run_threads(
    op: str,
    port: int,
    all_ids: list[str],
    etags: dict[str, int],
    shares: list[list[str]],
    seeds: list[int],
    start_at: float,
    duration: float,
    max_requests: int | None,
    keep_latencies: bool,
) -> Outcome:
    """One client process: a thread per share."""
    result = Result()
    lock = threading.Lock()
    barrier = threading.Barrier(len(shares) + 1)
    budget = iter(range(max_requests)) if max_requests else iter(int, 1)  # endless
    deadline = [float("inf")]
    clients = [
        Client(op, all_ids, etags, ids, seed_) for ids, seed_ in zip(shares, seeds, strict=True)
    ]
    threads = [
        threading.Thread(
            target=_worker,
            args=(client, port, barrier, deadline, budget, result, lock, keep_latencies),
            daemon=True,
        )
        for client in clients
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    began = time.perf_counter()
    deadline[0] = began + duration
    barrier.wait()
    for thread in threads:
        thread.join(duration + 60)
    result.seconds = time.perf_counter() - began
    result.client_cores = (time.process_time() - cpu) / result.seconds
    mine = {i: etags[i] for client in clients for i in client.ids if i in etags}
    return Outcome(
        result,
        mine,
        [i for client in clients for i in client.deleted],
        [i for client in clients for i in client.created],
    )


def run_load(
    server: Server,
    op: str,
    clients: int,
    duration: float,
    max_requests: int | None,
    shares: list[list[str]],
    procs: int = 1,
    keep_latencies: bool = False,
) -> Result:
    """``clients`` threads over ``procs`` processes for ``duration`` s or ``max_requests``."""
    procs = max(1, min(procs, clients))
    groups = [list(range(clients))[i::procs] for i in range(procs)]
    start_at = time.time() + (0.5 if procs > 1 else 0.05)
    tracks_etags = op in ("patch", "mixed")
    jobs = [
        (
            op,
            server.port,
            server.ids,
            {i: server.etags[i] for g in group for i in shares[g]} if tracks_etags else {},
            [shares[g] for g in group],
            group,
            start_at,
            duration,
            None if not max_requests else -(-max_requests // procs),
            keep_latencies,
        )
        for group in groups
    ]
    cpu_server = server.cpu_seconds()
    cpu_db = postgres_cpu_seconds() if server.url else 0.0
    began = time.perf_counter()
    if procs == 1:
        outcomes = [_run_threads(*jobs[0])]
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=procs, mp_context=context) as executor:
            outcomes = list(executor.map(_run_threads, *zip(*jobs, strict=True)))
    # Server CPU over the whole window (process start-up included: a small overestimate).
    server_seconds = server.cpu_seconds() - cpu_server
    db_seconds = postgres_cpu_seconds() - cpu_db if server.url else 0.0
    memory = server.worker_memory().values()
    total = Result()
    deleted: set[str] = set()
    for outcome in outcomes:
        result = outcome.result
        total.requests += result.requests
        total.errors += result.errors
        total.latencies.extend(result.latencies)
        total.first_error = total.first_error or result.first_error
        total.error_kinds.update(result.error_kinds)
        total.seconds = max(total.seconds, result.seconds)
        total.client_cores += result.client_cores
        server.etags.update(outcome.etags)
        deleted.update(outcome.deleted)
        server.ids.extend(outcome.created)
    if deleted:
        server.ids[:] = [i for i in server.ids if i not in deleted]
    window = max(total.seconds, time.perf_counter() - began - 0.5)
    total.server_cores = server_seconds / window
    total.db_cores = db_seconds / window
    total.worker_hwm_kib = max((hwm for hwm, _ in memory), default=0)
    total.worker_rss_kib = max((rss for _, rss in memory), default=0)
    return total


def share(ids: list[str], parts: int) -> list[list[str]]:
    return [ids[i::parts] for i in range(parts)]


def bench_op(server: Server, op: str, args: argparse.Namespace) -> tuple[Result, Result]:
    """The load run, then the single-client latency run, of ``op`` on ``server``."""
    ids = list(server.ids)
    owned = op in ("patch", "delete", "mixed")  # each client has records of its own
    reserved = ids[-args.latency_requests :] if owned else []
    pool = ids[: -args.latency_requests] if owned else ids
    load = run_load(
        server,
        op,
        args.clients,
        args.duration,
        args.requests,
        share(pool, args.clients),
        procs=args.client_procs,
    )
    latency = run_load(
        server,
        op,
        1,
        args.duration,
        args.latency_requests,
        [reserved or ids],
        procs=1,
        keep_latencies=True,
    )
    return load, latency


# -- report -------------------------------------------------------------------

#: The ratio columns, shown when both of their targets ran.
RATIOS = (("kiln", "floor"), ("kiln-metrics", "kiln"), ("kiln-shareable", "kinto"))
LABELS = {
    "floor": "floor",
    "kiln": "kiln",
    "kiln-metrics": "kiln-metrics",
    "kiln-shareable": "kiln-shareable",
    "kinto": "Kinto",
}

#: One operation's figures: ``{target: (load run, latency run)}``.
Row = dict[str, tuple[Result, Result]]


def _ratio(results: Row, a: str, b: str) -> float | None:
    """``a``'s throughput over ``b``'s; ``None`` unless both ran (and ``b`` did something)."""
    if a not in results or b not in results or not results[b][0].rate:
        return None
    return results[a][0].rate / results[b][0].rate


def _operation_label(op: str) -> str:
    if op == "batch":
        return f"batch ({BATCH_SIZE} creates)"
    if op == "mixed":
        return "mixed (" + "/".join(str(weight) for _, weight in MIX) + ")"
    return op


def report(rows: list[tuple[str, Row]], targets: list[str], postgresql: bool) -> str:
    """Two Markdown tables: throughput and errors; latency, CPU and memory."""
    names = [LABELS[t] for t in targets]
    slash = "/".join(names)
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    header = (
        "| operation | "
        + " | ".join(f"{name} req/s" for name in names)
        + "".join(f" | {LABELS[a]}/{LABELS[b]}" for a, b in ratios)
        + f" | errors {slash} |"
    )
    lines = [header, "|" + "---|" * (2 + len(names) + len(ratios))]
    for op, results in rows:
        cells = [_operation_label(op)]
        cells += [f"{results[t][0].rate:,.0f}" for t in targets]
        for a, b in ratios:
            ratio = _ratio(results, a, b)
            cells.append("n/a" if ratio is None else f"{ratio:.2f}x")
        cells.append("/".join(str(results[t][0].errors + results[t][1].errors) for t in targets))
        lines.append("| " + " | ".join(cells) + " |")
    columns = ["p50 ms", "p99 ms", "server CPU cores", "client CPU cores"]
    if postgresql:
        columns.append("PostgreSQL CPU cores")
    columns.append("worker peak RSS MiB")
    lines += ["", f"| operation | {' | '.join(f'{c} {slash}' for c in columns)} |"]
    lines.append("|" + "---|" * (1 + len(columns)))
    for op, results in rows:
        cells = [_operation_label(op)]
        cells.append(" / ".join(f"{results[t][1].percentile(50):.2f}" for t in targets))
        cells.append(" / ".join(f"{results[t][1].percentile(99):.2f}" for t in targets))
        cells.append(" / ".join(f"{results[t][0].server_cores:.2f}" for t in targets))
        cells.append(" / ".join(f"{results[t][0].client_cores:.2f}" for t in targets))
        if postgresql:
            cells.append(" / ".join(f"{results[t][0].db_cores:.2f}" for t in targets))
        cells.append(
            " / ".join(
                f"{max(results[t][0].worker_hwm_kib, results[t][1].worker_hwm_kib) / 1024:.0f}"
                for t in targets
            )
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_run(outcomes: list[tuple[Result, Result]]) -> tuple[Result, Result]:
    """Of a target's runs of an operation (``--rounds``), the one of median
    throughput (the lower one of an even count)."""
    ordered = sorted(outcomes, key=lambda outcome: outcome[0].rate)
    return ordered[(len(ordered) - 1) // 2]


def figures(
    rows: list[tuple[str, Row]],
    targets: list[str],
    meta: dict[str, Any],
    runs: dict[str, dict[str, list[tuple[Result, Result]]]] | None = None,
) -> dict[str, Any]:
    """Every figure of the run, for ``--json`` (each round's throughput too)."""
    operations = {}
    for op, results in rows:
        entry: dict[str, Any] = {
            target: {
                "load": results[target][0].as_dict(),
                "latency": results[target][1].as_dict(latencies=True),
            }
            for target in targets
        }
        if runs is not None:
            for target in targets:
                entry[target]["rounds_req_per_s"] = [
                    round(load.rate, 2) for load, _ in runs[op][target]
                ]
        ratios = {f"{a}/{b}": _ratio(results, a, b) for a, b in RATIOS}
        entry["ratios"] = {
            name: round(ratio, 3) for name, ratio in ratios.items() if ratio is not None
        }
        operations[op] = entry
    return {**meta, "targets": targets, "operations": operations}


# -- setup ----------------------------------------------------------------------


def _database_url(base: str, suffix: str) -> str:
    parts = urlsplit(base)
    return parts._replace(path=f"{parts.path.rstrip('/')}_{suffix}").geturl()


def _admin_url(base: str) -> str:
    return urlsplit(base)._replace(path="/postgres").geturl()


def recreate_database(base: str, suffix: str) -> str:
    """Drop and create ``<base database>_<suffix>`` (UTF8, UTC); its URL."""
    import psycopg

    url = _database_url(base, suffix)
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_admin_url(base), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'UTC'")
    return url


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_admin_url(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe_postgresql(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        settings = [
            f"{name} {conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        ]
    return "PostgreSQL " + ", ".join(settings).removeprefix("server_version ")


def kiln_config(
    template: str,
    target: str,
    backend: str,
    url: str,
    log_level: str = "WARNING",
    statsd_url: str | None = None,
) -> dict[str, Any]:
    """kiln's configuration for ``target``: the template (``{backend}`` and ``{url}``
    filled in) with what the benchmark needs set over it: ``views``, ``basicauth``
    with :data:`HMAC_SECRET`, logging at ``log_level``, and for ``kiln`` the
    resource-level principals. With ``statsd_url``, metrics are on: sent there
    and kept for Prometheus (``--kiln-metrics``)."""
    text = template.replace("{backend}", backend).replace("{url}", url)
    settings: dict[str, Any] = {
        "views": [KILN_VIEWS[target]],
        "auth": {"policies": ["basicauth"], "userid_hmac_secret": HMAC_SECRET},
        "logging": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "kiln.logging.JSONFormatter"}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "json",
                }
            },
            "root": {"level": log_level, "handlers": ["stderr"]},
            "loggers": {"request.summary": {"level": log_level}},
        },
    }
    if statsd_url:
        settings["metrics"] = {"statsd_url": statsd_url, "prometheus": True}
    if target in ("kiln", "kiln-metrics"):
        settings["record"] = {
            f"{permission}_principals": ["system.Authenticated"]
            for permission in ("read", "write", "create")
        }
    from kiln.config import deep_merge

    return deep_merge(yaml.safe_load(text) or {}, settings)


#: The statsd sockets of ``--kiln-metrics``, open while the benchmark runs.
_METRICS_SINKS: list[socket.socket] = []


def build_servers(args: argparse.Namespace, tmp: Path) -> list[Server]:
    """The servers of ``args.targets`` (databases created, configs written)."""
    template = args.kiln_config.read_text() if args.kiln_config else KILN_CONFIG
    servers = []
    for target in args.targets:
        log = tmp / f"{target}.log"
        db = tmp / f"{target}.sqlite" if args.database == "sqlite" else None
        url = "" if db else recreate_database(args.postgresql_url, target.replace("-", "_"))
        if target == "floor":
            env = {"FLOOR_DB": str(db)} if db else {"FLOOR_POSTGRESQL_URL": url}
            servers.append(Server("floor", ["bench.floor_app:application"], env, log, db, url))
        elif target == "kinto":
            ini = kinto_env.write_ini(
                tmp / "kinto.ini",
                url,
                pool_size=args.threads,
                secret=HMAC_SECRET,
                log_level=args.log_level,
            )
            kinto_env.migrate(ini)
            servers.append(
                Server(
                    "kinto",
                    ["--paste", str(ini)],
                    {"PYTHONWARNINGS": "ignore"},
                    log,
                    url=url,
                    python=str(kinto_env.python()),
                )
            )
        else:
            statsd_url = None
            env = {}
            if args.kiln_metrics or target == "kiln-metrics":
                # A statsd that receives and never reads (the kernel drops what
                # overflows), and Prometheus's directory shared by the workers.
                sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sink.bind(("127.0.0.1", 0))
                _METRICS_SINKS.append(sink)
                statsd_url = f"udp://127.0.0.1:{sink.getsockname()[1]}"
                shared = tmp / f"{target}-prometheus"
                shared.mkdir()
                env["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
            config = kiln_config(
                template, target, args.database, str(db) if db else url, args.log_level, statsd_url
            )
            path = tmp / f"{target}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            env["KILN_CONFIG"] = str(path)
            if args.kiln_src:
                env["PYTHONPATH"] = f"{args.kiln_src.resolve() / 'src'}{os.pathsep}{ROOT}"
            servers.append(
                Server(target, ["kiln.wsgi:application"], env, log, db, url, config=config)
            )
    return servers


def check_targets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Notes for the header line; exits with a sentence when a target cannot run."""
    notes = []
    if args.database == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            parser.error("--database postgresql needs psycopg: pip install -e '.[postgresql]'")
        try:
            notes.append(describe_postgresql(_admin_url(args.postgresql_url)))
        except Exception as exc:
            parser.error(f"PostgreSQL is not reachable at {args.postgresql_url}: {exc}")
    if "kinto" in args.targets:
        versions = kinto_env.ensure_venv(quiet=True)
        notes.append(f"Kinto {versions['kinto']} (SQLAlchemy {versions.get('SQLAlchemy')})")
    return notes


def _git_revision(root: Path = ROOT) -> str:
    """The commit benchmarked, ``+dirty`` when the work tree has changes."""

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--records", type=int, default=5_000, help="records seeded per target")
    parser.add_argument(
        "--requests", type=int, default=None, help="stop a load run after this many requests"
    )
    parser.add_argument(
        "--latency-requests", type=int, default=300, help="requests of the single-client run"
    )
    parser.add_argument("--only", default="", help=f"comma-separated among {','.join(OPERATIONS)}")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="client processes the --clients threads are spread over (one GIL each)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgresql-url",
        default=DEFAULT_POSTGRESQL_URL,
        help="server and base name of the databases <name>_floor, <name>_kiln, "
        "<name>_kiln_shareable, <name>_kinto (dropped and created by this script; "
        f"default {DEFAULT_POSTGRESQL_URL})",
    )
    parser.add_argument(
        "--targets",
        default="",
        help=f"comma-separated among {','.join(TARGETS)} (default: "
        f"{','.join(DEFAULT_TARGETS)}; Kinto is skipped on SQLite)",
    )
    parser.add_argument(
        "--kiln-config",
        type=Path,
        help="kiln's YAML config template ({backend} and {url} are filled in); the "
        "benchmark sets views, auth, logging and the record resource's principals over it",
    )
    parser.add_argument(
        "--kiln-metrics",
        action="store_true",
        help="run the kiln targets with metrics on (docs/observability.md): StatsD to a "
        "loopback socket the benchmark holds, and Prometheus, to measure their cost",
    )
    parser.add_argument(
        "--kiln-src",
        type=Path,
        help="run the kiln targets' servers on the kiln package of this source tree "
        "(its src/ directory: an older checkout, to compare with; the benchmark's "
        "own code, seeding included, stays this tree's)",
    )
    parser.add_argument(
        "--log-level",
        choices=("WARNING", "INFO"),
        default="WARNING",
        help="kiln's and Kinto's log level; INFO writes their request-summary lines "
        "(default WARNING)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the operations this many times, targets in turn within each, and "
        "report each target's median run (on a noisy machine; not with delete, which "
        "uses the records up)",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory and the databases"
    )
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.only.split(",") if op.strip()] or list(OPERATIONS)
    unknown = set(ops) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose among {OPERATIONS}")
    args.ops = [op for op in OPERATIONS if op in ops]  # the order matters: delete is last
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rounds > 1 and "delete" in args.ops:
        parser.error("delete uses the records up: run it with --rounds 1")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] or list(DEFAULT_TARGETS)
    if set(targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(set(targets) - set(TARGETS))}; among {TARGETS}")
    args.skipped = []
    if args.database == "sqlite" and "kinto" in targets:
        targets.remove("kinto")
        args.skipped.append("Kinto (no SQLite backend)")
        if not targets:
            parser.error("Kinto has no SQLite backend: use --database postgresql")
    args.targets = [t for t in TARGETS if t in targets]
    if args.records < args.clients + args.latency_requests:
        parser.error("--records must cover --clients + --latency-requests")
    args.notes = check_targets(parser, args)
    return args


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings and machine, for the header line and the JSON file."""
    import kiln

    database = (
        f"SQLite {sqlite3.sqlite_version}" if args.database == "sqlite" else "; ".join(args.notes)
    )
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": _git_revision(args.kiln_src or ROOT)
        + (f" (--kiln-src {args.kiln_src})" if args.kiln_src else ""),
        "kiln_version": kiln.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "load_average": os.getloadavg(),
        "database": database,
        "clients": args.clients,
        "client_procs": args.client_procs,
        "duration": args.duration,
        "records": args.records,
        "latency_requests": args.latency_requests,
        "workers": args.workers,
        "threads": args.threads,
        "kiln_metrics": args.kiln_metrics,
        "rounds": args.rounds,
        "log_level": args.log_level,
        "mix": dict(MIX),
        "skipped": args.skipped,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    meta = describe(args)
    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    servers: list[Server] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        servers = build_servers(args, tmp)
        records = dataset(args.records, random.Random(42))
        for server in servers:
            began = time.perf_counter()
            server.start(args.workers, args.threads)
            seed(server, records)
            print(
                f"  {server.name}: started and seeded in {time.perf_counter() - began:.1f}s",
                flush=True,
            )
        skipped = "".join(f"; skipped: {what}" for what in args.skipped)
        print(
            f"# {args.clients} clients, {args.duration:g}s per run, {args.records:,} records, "
            f"gunicorn -w {args.workers} --threads {args.threads}, nproc {meta['nproc']}, "
            f"load {meta['load_average'][0]:.1f}, Python {meta['python']}, "
            f"kiln {meta['kiln_version']} at {meta['revision']}, {meta['database']}{skipped}",
            flush=True,
        )
        runs: dict[str, dict[str, list[tuple[Result, Result]]]] = {op: {} for op in args.ops}
        for round_ in range(1, args.rounds + 1):
            for op in args.ops:
                for server in servers:
                    load, single = bench_op(server, op, args)
                    runs[op].setdefault(server.name, []).append((load, single))
                    kinds = load.error_kinds + single.error_kinds
                    db = f" db {load.db_cores:.2f}" if server.url else ""
                    prefix = f"  [{round_}/{args.rounds}]" if args.rounds > 1 else ""
                    print(
                        f"{prefix}  {op:6} {server.name:14} {load.rate:9,.1f} req/s  "
                        f"{load.requests:7} req  {load.errors + single.errors} errors  "
                        f"p50 {single.percentile(50):.2f} ms  p99 {single.percentile(99):.2f} ms  "
                        f"cores srv {load.server_cores:.2f} cli {load.client_cores:.2f}{db}  "
                        f"rss {max(load.worker_hwm_kib, single.worker_hwm_kib) / 1024:.0f} MiB",
                        flush=True,
                    )
                    if kinds:
                        print(f"    errors: {dict(kinds.most_common())}")
                    if load.first_error or single.first_error:
                        print(f"    first error: {load.first_error or single.first_error}")
        rows = [
            (op, {name: median_run(outcomes) for name, outcomes in by_target.items()})
            for op, by_target in runs.items()
        ]
        rows.sort(key=lambda row: REPORT_ORDER.index(row[0]))
        print()
        print(report(rows, args.targets, args.database == "postgresql"))
        if args.json:
            args.json.write_bytes(
                orjson.dumps(figures(rows, args.targets, meta, runs), option=orjson.OPT_INDENT_2)
            )
            print(f"\nwrote {args.json}")
    finally:
        for server in servers:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"kept {tmp}" + "".join(f", {s.url}" for s in servers if s.url))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            for server in servers:
                if server.url:
                    with contextlib.suppress(Exception):
                        drop_database(server.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
