"""Requests/s of kiln's resource endpoints on SQLite, beside the bare floor.

::

    .venv/bin/python bench/resources.py --duration 5
    .venv/bin/python bench/resources.py --only get,list --clients 8 --records 2000

Starts two gunicorn servers on loopback (``-w 2 --threads 4``, ARCHITECTURE's
setting), each on its own SQLite file in a temporary directory:

- kiln: ``kiln.wsgi:application``, ``KILN_CONFIG`` naming a temporary config
  whose ``views`` is :mod:`bench.kiln_resources` (``/v1/mushrooms``);
- the floor: ``bench.floor_app:application`` (same schema, same SQL, same
  transactions, no framework).

Both get the same ``--records`` records (written straight into SQLite before
the runs, with kiln's layout), then each operation runs against kiln, then
the floor: ``--clients`` threads with one keep-alive connection each for
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
and workers, from ``/proc``) are reported per run, as cores used.
"""

from __future__ import annotations

import argparse
import contextlib
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

import orjson
import urllib3

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ("get", "list", "create", "patch", "batch", "delete")
LIST_QUERY = "/v1/mushrooms?edible=true&_sort=-size&_limit=20"
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
  backend: sqlite
  url: {db}
"""


# -- servers ------------------------------------------------------------------


@dataclass
class Server:
    name: str
    app: str
    db: Path
    env: dict[str, str]
    log: Path
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
            sys.executable,
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
            self.app,
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
                pool.request("GET", "/v1/mushrooms/absent", timeout=2.0)
                # Warm every worker thread (imports, connections, statement cache).
                for _ in range(50):
                    pool.request("GET", "/v1/mushrooms/absent", timeout=2.0)
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


def seed(server: Server, records: int, rng: random.Random) -> None:
    """``records`` live mushrooms, written straight into the server's SQLite file.

    Same layout as ``kiln.storage.sqlite`` (the floor mirrors it); the
    collection timestamp is set past the last record's.
    """
    conn = sqlite3.connect(server.db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        start = time.time_ns() // 1_000_000 - records
        rows = []
        for i in range(records):
            object_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            data = {"name": f"mushroom-{i}", "size": rng.randint(1, 1000), "edible": i % 2 == 0}
            rows.append(("mushroom", "", object_id, start + i, orjson.dumps(data).decode()))
            server.ids.append(object_id)
            server.etags[object_id] = start + i
        conn.executemany(
            "INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
            " VALUES (?, ?, ?, ?, 0, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
            " VALUES ('mushroom', '', ?) ON CONFLICT (resource_name, parent_id)"
            " DO UPDATE SET last_modified = excluded.last_modified",
            (start + records,),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# -- load ---------------------------------------------------------------------

#: One request: (method, path, body, headers, expected status).
Request = tuple[str, str, bytes | None, dict[str, str], int]


def _new_record(rng: random.Random) -> dict[str, Any]:
    n = rng.getrandbits(32)
    return {"name": f"new-{n}", "size": n % 1000, "edible": bool(n & 1)}


class Client:
    """Makes the requests of one operation for one client, from its share of ids."""

    def __init__(
        self, op: str, all_ids: list[str], etags: dict[str, int], ids: list[str], seed_: int
    ) -> None:
        self.op = op
        self.all_ids = all_ids
        self.etags = etags
        self.ids = ids
        self.rng = random.Random(seed_)
        self.next = 0

    def request(self) -> Request | None:
        op, rng = self.op, self.rng
        if op == "get":
            object_id = self.all_ids[rng.randrange(len(self.all_ids))]
            return "GET", f"/v1/mushrooms/{object_id}", None, {}, 200
        if op == "list":
            return "GET", LIST_QUERY, None, {}, 200
        if op == "create":
            body = orjson.dumps({"data": _new_record(rng)})
            return "POST", "/v1/mushrooms", body, JSON_HEADERS, 201
        if op == "batch":
            requests = [{"body": {"data": _new_record(rng)}} for _ in range(BATCH_SIZE)]
            body = orjson.dumps(
                {"defaults": {"method": "POST", "path": "/mushrooms"}, "requests": requests}
            )
            return "POST", "/v1/batch", body, JSON_HEADERS, 200
        if not self.ids:
            return None
        if op == "patch":
            object_id = self.ids[self.next % len(self.ids)]
            self.next += 1
            body = orjson.dumps({"data": {"size": rng.randint(1001, 10**9)}})
            headers = {**JSON_HEADERS, "If-Match": f'"{self.etags[object_id]}"'}
            return "PATCH", f"/v1/mushrooms/{object_id}", body, headers, 200
        if op == "delete":
            if self.next >= len(self.ids):
                return None  # out of records: this client stops
            object_id = self.ids[self.next]
            self.next += 1
            return "DELETE", f"/v1/mushrooms/{object_id}", None, {}, 200
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
    first_error: str = ""

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
            if not ok and not first_error:
                first_error = f"{method} {path}: {response.status} {response.data[:300]!r}"
        except Exception as exc:  # a transport error counts as an error
            ok = False
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
                Client(op, all_ids, etags, ids, seed_),
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
    began = time.perf_counter()
    if procs == 1:
        outcomes = [_run_threads(*jobs[0])]
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=procs, mp_context=context) as executor:
            outcomes = list(executor.map(_run_threads, *zip(*jobs, strict=True)))
    # Server CPU over the whole window (process start-up included: a small overestimate).
    server_seconds = server.cpu_seconds() - cpu_server
    total = Result()
    for result, etags in outcomes:
        total.requests += result.requests
        total.errors += result.errors
        total.latencies.extend(result.latencies)
        total.first_error = total.first_error or result.first_error
        total.seconds = max(total.seconds, result.seconds)
        total.client_cores += result.client_cores
        server.etags.update(etags)
    total.server_cores = server_seconds / max(total.seconds, time.perf_counter() - began - 0.5)
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


def _fmt_rate(result: Result) -> str:
    return f"{result.rate:,.0f}"


def report(rows: list[tuple[str, dict[str, tuple[Result, Result]]]]) -> str:
    header = (
        "| operation | kiln req/s | floor req/s | kiln/floor | errors kiln/floor "
        "| p50 ms kiln/floor | p99 ms kiln/floor "
        "| CPU cores kiln srv+cli | CPU cores floor srv+cli |"
    )
    lines = [header, "|" + "---|" * 9]
    for op, results in rows:
        (kl, kl1), (fl, fl1) = results["kiln"], results["floor"]
        ratio = kl.rate / fl.rate if fl.rate else float("nan")
        name = f"batch ({BATCH_SIZE} creates)" if op == "batch" else op
        lines.append(
            f"| {name} | {_fmt_rate(kl)} | {_fmt_rate(fl)} | {ratio:.2f}x "
            f"| {kl.errors + kl1.errors}/{fl.errors + fl1.errors} "
            f"| {kl1.percentile(50):.2f} / {fl1.percentile(50):.2f} "
            f"| {kl1.percentile(99):.2f} / {fl1.percentile(99):.2f} "
            f"| {kl.server_cores:.2f} + {kl.client_cores:.2f} "
            f"| {fl.server_cores:.2f} + {fl.client_cores:.2f} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.only.split(",") if op.strip()] or list(OPERATIONS)
    unknown = set(ops) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose among {OPERATIONS}")
    ops = [op for op in OPERATIONS if op in ops]  # the order matters: delete is last
    if args.records < args.clients + args.latency_requests:
        parser.error("--records must cover --clients + --latency-requests")

    tmp = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    (tmp / "kiln.yaml").write_text(KILN_CONFIG.format(db=tmp / "kiln.sqlite"))
    servers = [
        Server(
            "kiln",
            "kiln.wsgi:application",
            tmp / "kiln.sqlite",
            {"KILN_CONFIG": str(tmp / "kiln.yaml")},
            tmp / "kiln.log",
        ),
        Server(
            "floor",
            "bench.floor_app:application",
            tmp / "floor.sqlite",
            {"FLOOR_DB": str(tmp / "floor.sqlite")},
            tmp / "floor.log",
        ),
    ]
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        for server in servers:
            server.start(args.workers, args.threads)
            seed(server, args.records, random.Random(42))
        print(
            f"# {args.clients} clients, {args.duration:g}s per run, {args.records:,} records, "
            f"gunicorn -w {args.workers} --threads {args.threads}, nproc {os.cpu_count()}, "
            f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}",
            flush=True,
        )
        rows = []
        for op in ops:
            results = {}
            for server in servers:
                results[server.name] = bench_op(server, op, args)
                load, single = results[server.name]
                print(
                    f"  {op:7} {server.name:6} {load.rate:9,.1f} req/s  {load.requests:7} req  "
                    f"{load.errors + single.errors} errors  p50 {single.percentile(50):.2f} ms  "
                    f"p99 {single.percentile(99):.2f} ms  "
                    f"cores srv {load.server_cores:.2f} cli {load.client_cores:.2f}",
                    flush=True,
                )
                if load.first_error or single.first_error:
                    print(f"    first error: {load.first_error or single.first_error}")
            rows.append((op, results))
        print()
        print(report(rows))
    finally:
        for server in servers:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
