"""Requests/s of kiln's resource endpoints beside the bare floor (and Kinto on PostgreSQL).

::

    .venv/bin/python bench/resources.py --duration 5
    .venv/bin/python bench/resources.py --only get,list --clients 8 --records 2000
    .venv/bin/python bench/resources.py --database postgresql --duration 5
    .venv/bin/python bench/resources.py --database postgresql --targets floor,kinto

Starts one gunicorn server per target on loopback (``-w 2 --threads 4``,
ARCHITECTURE's setting, the same for every target):

- kiln: ``kiln.wsgi:application``, ``KILN_CONFIG`` naming a temporary config
  whose ``views`` is :mod:`bench.kiln_resources` (``/v1/mushrooms``) and
  whose ``storage.backend`` is ``--database`` (``--kiln-config`` replaces it);
- the floor: ``bench.floor_app:application`` (same schema, same SQL, same
  transactions, no framework);
- Kinto (``--database postgresql`` only): Kinto from ``bench/.kinto-venv``
  (:mod:`bench.kinto_env` creates it), ``gunicorn --paste kinto.ini``, the
  equivalent resource being ``/v1/buckets/bench/collections/items/records``.

With ``--database sqlite`` each server has its own SQLite file in a
temporary directory. With ``--database postgresql`` each has its own
database on the ``--postgresql-url`` server: ``<name>_kiln``, ``<name>_floor``,
``<name>_kinto`` (``<name>`` is the URL's database, ``kiln_bench`` by
default), dropped and created afresh by this script, dropped at the end
unless ``--keep``.

Every target gets the same ``--records`` records (same ids, same data),
written before the runs (straight into the floor's and Kinto's tables, and
through kiln's own storage backend), then each operation runs against each
target in turn: ``--clients`` threads with one keep-alive connection each for
``--duration`` seconds (or ``--requests`` requests), then one client for
``--latency-requests`` requests (p50/p99). Everything is bounded; servers
and temporary files are removed on exit, Ctrl-C included.

Operations: ``get`` (random record), ``list`` (``edible=true&_sort=-size&
_limit=20``), ``create``, ``patch`` (``If-Match`` with the record's current
ETag; each client owns its records so no 412 is expected), ``batch`` (25
creates in one ``POST /v1/batch``), ``delete`` (each client owns its records).
An error is any unexpected status (or a batch sub-response that is not 201)
or a transport error.

The client runs on the same machine: its CPU time and the servers' (master
and workers, from ``/proc``) are reported per run, as cores used; with
PostgreSQL, so is the CPU of every ``postgres`` process on the machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import multiprocessing
import os
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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/resources.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench import floor_app, kinto_env  # noqa: E402

OPERATIONS = ("get", "list", "create", "patch", "batch", "delete")
TARGETS = ("kiln", "floor", "kinto")
LIST_QUERY = "?edible=true&_sort=-size&_limit=20"
DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/kiln_bench"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
BATCH_SIZE = 25
CLK_TCK = os.sysconf("SC_CLK_TCK")

KILN_CONFIG = """\
project:
  name: kiln-bench
  version: "1.0.0"
views:
  - bench.kiln_resources
storage:
  backend: {backend}
  url: {url}
"""


# -- servers ------------------------------------------------------------------


@dataclass
class Server:
    """One target under gunicorn: its WSGI app, where its resource lives, what it holds."""

    name: str
    app: list[str]  # gunicorn's last arguments: "module:app", or "--paste", "x.ini"
    env: dict[str, str]
    log: Path
    db: Path | None = None  # its SQLite file (--database sqlite)
    url: str = ""  # its PostgreSQL database (--database postgresql)
    python: str = sys.executable
    collection: str = "/v1/mushrooms"
    batch_path: str = "/mushrooms"  # a batch sub-request's path (the prefix stripped)
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
                pool.request("GET", f"{self.collection}/absent", timeout=2.0)
                # Warm every worker thread (imports, connections, statement cache).
                for _ in range(50):
                    pool.request("GET", f"{self.collection}/absent", timeout=2.0)
                return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {timeout:.0f}s")

    def pids(self) -> list[int]:
        """The gunicorn master and its workers."""
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


#: The seeded records: (id, data), identical for every target.
Dataset = list[tuple[str, dict[str, Any]]]


def dataset(records: int, rng: random.Random) -> Dataset:
    return [
        (
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            {"name": f"mushroom-{i}", "size": rng.randint(1, 1000), "edible": i % 2 == 0},
        )
        for i in range(records)
    ]


def seed(server: Server, records: Dataset, kiln_config: str = "") -> None:
    """Write ``records`` into ``server``'s database, before any request; note ids and ETags."""
    start = time.time_ns() // 1_000_000 - len(records)
    if server.db is not None:
        _seed_sqlite(server.db, records, start)
    elif server.name == "floor":
        _seed_floor_postgresql(server.url, records, start)
    elif server.name == "kinto":
        _seed_kinto(server, records, start)
    else:
        server.etags.update(_seed_kiln_storage(kiln_config, records))
        server.ids.extend(object_id for object_id, _ in records)
        return
    server.ids.extend(object_id for object_id, _ in records)
    server.etags.update((object_id, start + i) for i, (object_id, _) in enumerate(records))


def _seed_sqlite(db: Path, records: Dataset, start: int) -> None:
    """Straight into the SQLite file, in ``kiln.storage.sqlite``'s layout (the floor's too).

    The collection timestamp is set past the last record's.
    """
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
            " VALUES (?, ?, ?, ?, 0, ?)",
            [
                ("mushroom", "", object_id, start + i, orjson.dumps(data).decode())
                for i, (object_id, data) in enumerate(records)
            ],
        )
        conn.execute(
            "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
            " VALUES ('mushroom', '', ?) ON CONFLICT (resource_name, parent_id)"
            " DO UPDATE SET last_modified = excluded.last_modified",
            (start + len(records),),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _seed_floor_postgresql(url: str, records: Dataset, start: int) -> None:
    import psycopg

    collection = (floor_app.RESOURCE, floor_app.PARENT)
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


def _seed_kiln_storage(kiln_config: str, records: Dataset) -> dict[str, int]:
    """Through kiln's own storage backend (whatever its layout), in one transaction."""
    import yaml

    from kiln.config import Configuration
    from kiln.storage import load_storage

    config = Configuration.from_mapping(yaml.safe_load(kiln_config))
    storage = load_storage(config)
    etags = {}
    try:
        storage.initialize_schema()
        with storage.transaction():
            for object_id, data in records:
                record = storage.create("mushroom", "", {"id": object_id, **data})
                etags[object_id] = record["last_modified"]
    finally:
        storage.close()
    if config.setting("storage.backend") == "postgresql":
        # As for the floor and Kinto: planner statistics of the bulk load, which
        # autovacuum would gather a minute later.
        import psycopg

        with psycopg.connect(config.setting("storage.url"), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    return etags


def _seed_kinto(server: Server, records: Dataset, start: int) -> None:
    """The bench bucket and collection through Kinto's API, the records into its tables."""
    import psycopg

    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, retries=False, timeout=30.0)
    bucket = f"/v1/buckets/{kinto_env.BUCKET}"
    for path, body in (
        (bucket, {"permissions": {"write": ["system.Everyone"]}}),
        (f"{bucket}/collections/{kinto_env.COLLECTION}", {"data": {"schema": floor_app.SCHEMA}}),
    ):
        response = pool.request("PUT", path, body=orjson.dumps(body), headers=JSON_HEADERS)
        if response.status not in (200, 201):
            raise RuntimeError(f"kinto: PUT {path}: {response.status} {response.data[:300]!r}")
    pool.close()
    with psycopg.connect(server.url, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO objects (id, parent_id, resource_name, last_modified, data, deleted)"
                " VALUES (%s, %s, 'record', from_epoch(%s), %s::jsonb, FALSE)",
                [
                    (object_id, kinto_env.PARENT_ID, start + i, orjson.dumps(data).decode())
                    for i, (object_id, data) in enumerate(records)
                ],
            )
        conn.execute("VACUUM ANALYZE objects")


# -- load ---------------------------------------------------------------------

#: One request: (method, path, body, headers, expected status).
Request = tuple[str, str, bytes | None, dict[str, str], int]


def _new_record(rng: random.Random) -> dict[str, Any]:
    n = rng.getrandbits(32)
    return {"name": f"new-{n}", "size": n % 1000, "edible": bool(n & 1)}


class Client:
    """Makes the requests of one operation for one client, from its share of ids."""

    def __init__(
        self,
        op: str,
        paths: tuple[str, str],
        all_ids: list[str],
        etags: dict[str, int],
        ids: list[str],
        seed_: int,
    ) -> None:
        self.op = op
        self.collection, self.batch_path = paths
        self.all_ids = all_ids
        self.etags = etags
        self.ids = ids
        self.rng = random.Random(seed_)
        self.next = 0

    def request(self) -> Request | None:
        op, rng = self.op, self.rng
        if op == "get":
            object_id = self.all_ids[rng.randrange(len(self.all_ids))]
            return "GET", f"{self.collection}/{object_id}", None, {}, 200
        if op == "list":
            return "GET", self.collection + LIST_QUERY, None, {}, 200
        if op == "create":
            body = orjson.dumps({"data": _new_record(rng)})
            return "POST", self.collection, body, JSON_HEADERS, 201
        if op == "batch":
            requests = [{"body": {"data": _new_record(rng)}} for _ in range(BATCH_SIZE)]
            body = orjson.dumps(
                {"defaults": {"method": "POST", "path": self.batch_path}, "requests": requests}
            )
            return "POST", "/v1/batch", body, JSON_HEADERS, 200
        if not self.ids:
            return None
        if op == "patch":
            object_id = self.ids[self.next % len(self.ids)]
            self.next += 1
            body = orjson.dumps({"data": {"size": rng.randint(1001, 10**9)}})
            headers = {**JSON_HEADERS, "If-Match": f'"{self.etags[object_id]}"'}
            return "PATCH", f"{self.collection}/{object_id}", body, headers, 200
        if op == "delete":
            if self.next >= len(self.ids):
                return None  # out of records: this client stops
            object_id = self.ids[self.next]
            self.next += 1
            return "DELETE", f"{self.collection}/{object_id}", None, {}, 200
        raise ValueError(op)

    def check(self, request: Request, response: urllib3.BaseHTTPResponse) -> bool:
        _, path, _, _, expected = request
        if response.status != expected:
            return False
        if self.op == "patch":
            etag = response.headers.get("ETag", "")
            self.etags[path.rsplit("/", 1)[1]] = int(etag.strip('"'))
        elif self.op == "batch":
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
        method, path, body, headers, _ = request
        began = clock()
        try:
            response = pool.urlopen(method, path, body=body, headers=headers, retries=False)
            ok = client.check(request, response)
            if not ok:
                kinds[_error_kind(request, response)] += 1
                if not first_error:
                    first_error = f"{method} {path}: {_error_detail(request, response)}"
        except Exception as exc:  # a transport error counts as an error
            ok = False
            kinds[type(exc).__name__] += 1
            first_error = first_error or f"{method} {path}: {exc!r}"
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
    if response.status == request[4]:
        with contextlib.suppress(Exception):
            for sub in orjson.loads(response.data)["responses"]:
                if sub["status"] != 201:
                    return f"batch item {sub['status']} {orjson.dumps(sub.get('body'))[:300]!r}"
    return f"{response.status} {response.data[:300]!r}"


def _error_kind(request: Request, response: urllib3.BaseHTTPResponse) -> str:
    """``"503"``, or for a batch answered 200, its failed sub-responses' statuses."""
    if response.status != request[4]:
        return str(response.status)
    with contextlib.suppress(Exception):
        subs = orjson.loads(response.data)["responses"]
        failed = sorted({str(sub["status"]) for sub in subs if sub["status"] != 201})
        return f"batch item {'/'.join(failed)}"
    return "unexpected body"


def _run_threads(
    op: str,
    paths: tuple[str, str],
    port: int,
    all_ids: list[str],
    etags: dict[str, int],
    shares: list[list[str]],
    seeds: list[int],
    start_at: float,
    duration: float,
    max_requests: int | None,
    keep_latencies: bool,
) -> tuple[Result, dict[str, int]]:
    """One client process: a thread per share; returns its result and updated ETags."""
    result = Result()
    lock = threading.Lock()
    barrier = threading.Barrier(len(shares) + 1)
    budget = iter(range(max_requests)) if max_requests else iter(int, 1)  # endless
    deadline = [float("inf")]
    threads = [
        threading.Thread(
            target=_worker,
            args=(
                Client(op, paths, all_ids, etags, ids, seed_),
                port,
                barrier,
                deadline,
                budget,
                result,
                lock,
                keep_latencies,
            ),
            daemon=True,
        )
        for ids, seed_ in zip(shares, seeds, strict=True)
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
    mine = {i: etags[i] for ids in shares for i in ids if i in etags}
    return result, mine


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
    jobs = [
        (
            op,
            (server.collection, server.batch_path),
            server.port,
            server.ids,
            {i: server.etags[i] for g in group for i in shares[g]} if op == "patch" else {},
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
    total = Result()
    for result, etags in outcomes:
        total.requests += result.requests
        total.errors += result.errors
        total.latencies.extend(result.latencies)
        total.first_error = total.first_error or result.first_error
        total.error_kinds.update(result.error_kinds)
        total.seconds = max(total.seconds, result.seconds)
        total.client_cores += result.client_cores
        server.etags.update(etags)
    window = max(total.seconds, time.perf_counter() - began - 0.5)
    total.server_cores = server_seconds / window
    total.db_cores = db_seconds / window
    return total


def share(ids: list[str], parts: int) -> list[list[str]]:
    return [ids[i::parts] for i in range(parts)]


def bench_op(server: Server, op: str, args: argparse.Namespace) -> tuple[Result, Result]:
    """The load run, then the single-client latency run, of ``op`` on ``server``."""
    ids = list(server.ids)
    reserved = ids[-args.latency_requests :] if op in ("patch", "delete") else []
    pool = ids[: -args.latency_requests] if reserved else ids
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
    if op == "delete":
        server.ids[:] = []  # what is left is not worth tracking
    return load, latency


# -- report -------------------------------------------------------------------


def _ratio(results: dict[str, tuple[Result, Result]], a: str, b: str) -> str:
    rate_a, rate_b = results[a][0].rate, results[b][0].rate
    return f"{rate_a / rate_b:.2f}x" if rate_b else "n/a"


#: The ratio columns shown when both of their targets ran.
RATIOS = (("kiln", "floor"), ("kiln", "kinto"), ("kinto", "floor"))
LABELS = {"kiln": "kiln", "floor": "floor", "kinto": "Kinto"}


def report(rows: list[tuple[str, dict[str, tuple[Result, Result]]]], targets: list[str]) -> str:
    """A Markdown table: per operation, each target's req/s, the ratios, errors, latency, CPU."""
    names = [LABELS[t] for t in targets]
    slash = "/".join(names)
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    header = (
        "| operation | "
        + " | ".join(f"{name} req/s" for name in names)
        + "".join(f" | {LABELS[a]}/{LABELS[b]}" for a, b in ratios)
        + f" | errors {slash} | p50 ms {slash} | p99 ms {slash} | "
        + " | ".join(f"CPU cores {name} srv+cli" for name in names)
        + " |"
    )
    columns = 1 + len(names) + len(ratios) + 3 + len(names)
    lines = [header, "|" + "---|" * columns]
    for op, results in rows:
        name = f"batch ({BATCH_SIZE} creates)" if op == "batch" else op
        cells = [name]
        cells += [f"{results[t][0].rate:,.0f}" for t in targets]
        cells += [_ratio(results, a, b) for a, b in ratios]
        cells.append("/".join(str(results[t][0].errors + results[t][1].errors) for t in targets))
        cells.append(" / ".join(f"{results[t][1].percentile(50):.2f}" for t in targets))
        cells.append(" / ".join(f"{results[t][1].percentile(99):.2f}" for t in targets))
        cells += [
            f"{results[t][0].server_cores:.2f} + {results[t][0].client_cores:.2f}" for t in targets
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _fill(template: str, backend: str, url: str) -> str:
    """kiln's config: ``{backend}`` and ``{url}`` replaced (other braces left alone)."""
    return template.replace("{backend}", backend).replace("{url}", url)


def build_servers(args: argparse.Namespace, tmp: Path) -> tuple[list[Server], str]:
    """The servers of ``args.targets`` (databases created); kiln's config text."""
    template = args.kiln_config.read_text() if args.kiln_config else KILN_CONFIG
    servers = []
    kiln_config = ""
    for target in args.targets:
        log = tmp / f"{target}.log"
        if args.database == "sqlite":
            db = tmp / f"{target}.sqlite"
            if target == "kiln":
                kiln_config = _fill(template, "sqlite", str(db))
                (tmp / "kiln.yaml").write_text(kiln_config)
                env = {"KILN_CONFIG": str(tmp / "kiln.yaml")}
                servers.append(Server("kiln", ["kiln.wsgi:application"], env, log, db=db))
            else:
                env = {"FLOOR_DB": str(db)}
                servers.append(Server("floor", ["bench.floor_app:application"], env, log, db=db))
            continue
        url = recreate_database(args.postgresql_url, target)
        if target == "kiln":
            kiln_config = _fill(template, "postgresql", url)
            (tmp / "kiln.yaml").write_text(kiln_config)
            env = {"KILN_CONFIG": str(tmp / "kiln.yaml")}
            servers.append(Server("kiln", ["kiln.wsgi:application"], env, log, url=url))
        elif target == "floor":
            env = {"FLOOR_POSTGRESQL_URL": url}
            servers.append(Server("floor", ["bench.floor_app:application"], env, log, url=url))
        else:
            ini = kinto_env.write_ini(tmp / "kinto.ini", url, pool_size=args.threads)
            kinto_env.migrate(ini)
            servers.append(
                Server(
                    "kinto",
                    ["--paste", str(ini)],
                    {"PYTHONWARNINGS": "ignore"},
                    log,
                    url=url,
                    python=str(kinto_env.python()),
                    collection=kinto_env.RECORDS_PATH,
                    batch_path=kinto_env.RECORDS_PATH.removeprefix("/v1"),
                )
            )
    return servers, kiln_config


def check_targets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Notes for the header line; exits with a sentence when a target cannot run."""
    notes = []
    if args.database == "sqlite" and "kinto" in args.targets:
        parser.error("Kinto has no SQLite backend: use --database postgresql, or drop kinto")
    if args.database == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            parser.error("--database postgresql needs psycopg: pip install -e '.[postgresql]'")
        if (
            "kiln" in args.targets
            and not args.kiln_config
            and importlib.util.find_spec("kiln.storage.postgresql") is None
        ):
            parser.error(
                "kiln has no PostgreSQL storage backend yet (kiln.storage.postgresql): "
                "run --targets floor,kinto, or give --kiln-config"
            )
        try:
            notes.append(describe_postgresql(_admin_url(args.postgresql_url)))
        except Exception as exc:
            parser.error(f"PostgreSQL is not reachable at {args.postgresql_url}: {exc}")
    if "kinto" in args.targets:
        versions = kinto_env.ensure_venv(quiet=True)
        notes.append(f"Kinto {versions['kinto']} (SQLAlchemy {versions.get('SQLAlchemy')})")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--records", type=int, default=10_000, help="records seeded")
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
        help="server and base name of the databases <name>_kiln, <name>_floor, <name>_kinto "
        f"(dropped and created by this script; default {DEFAULT_POSTGRESQL_URL})",
    )
    parser.add_argument(
        "--targets",
        default="",
        help="comma-separated among kiln,floor,kinto (default: kiln,floor on SQLite, "
        "all three on PostgreSQL)",
    )
    parser.add_argument(
        "--kiln-config",
        type=Path,
        help="kiln's YAML config template ({backend} and {url} are filled in); "
        "it must list bench.kiln_resources in views",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory and the databases"
    )
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.only.split(",") if op.strip()] or list(OPERATIONS)
    unknown = set(ops) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose among {OPERATIONS}")
    ops = [op for op in OPERATIONS if op in ops]  # the order matters: delete is last
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        targets = list(TARGETS) if args.database == "postgresql" else ["kiln", "floor"]
    if set(targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(set(targets) - set(TARGETS))}; among {TARGETS}")
    args.targets = [t for t in TARGETS if t in targets]
    if args.records < args.clients + args.latency_requests:
        parser.error("--records must cover --clients + --latency-requests")
    notes = check_targets(parser, args)

    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    servers: list[Server] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        servers, kiln_config = build_servers(args, tmp)
        records = dataset(args.records, random.Random(42))
        for server in servers:
            server.start(args.workers, args.threads)
            seed(server, records, kiln_config)
        database = (
            f"SQLite {sqlite3.sqlite_version}" if args.database == "sqlite" else "; ".join(notes)
        )
        print(
            f"# {args.clients} clients, {args.duration:g}s per run, {args.records:,} records, "
            f"gunicorn -w {args.workers} --threads {args.threads}, nproc {os.cpu_count()}, "
            f"Python {sys.version.split()[0]}, {database}",
            flush=True,
        )
        rows = []
        for op in ops:
            results = {}
            for server in servers:
                results[server.name] = bench_op(server, op, args)
                load, single = results[server.name]
                kinds = load.error_kinds + single.error_kinds
                db = f" db {load.db_cores:.2f}" if server.url else ""
                print(
                    f"  {op:7} {server.name:6} {load.rate:9,.1f} req/s  {load.requests:7} req  "
                    f"{load.errors + single.errors} errors  p50 {single.percentile(50):.2f} ms  "
                    f"p99 {single.percentile(99):.2f} ms  "
                    f"cores srv {load.server_cores:.2f} cli {load.client_cores:.2f}{db}",
                    flush=True,
                )
                if kinds:
                    print(f"    errors: {dict(kinds.most_common())}")
                if load.first_error or single.first_error:
                    print(f"    first error: {load.first_error or single.first_error}")
            rows.append((op, results))
        print()
        print(report(rows, args.targets))
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
