"""How long a ``like_`` filter takes over 10,000 records, per backend (issue #15).

Not a test: a measure. Fills one collection with 10,000 records whose
``name`` is a few words of random text (a thousand of them holding
``needle``; with ``--non-ascii``, every name ends with ``café``), then
times ``list_all`` with ``like_name`` patterns (a page of 10 records, and
every match), adversarial ones included, and prints the median and p99 of
each in milliseconds.

    .venv/bin/python bench/like_scan.py                      # memory, SQLite
    .venv/bin/python bench/like_scan.py --postgresql URL     # + PostgreSQL
    .venv/bin/python bench/like_scan.py --redis URL          # + Redis
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kiln._postgresql import PostgreSQLDatabase
from kiln._sqlite import SQLiteDatabase
from kiln.storage import ABSENT, Filter, Operator, StorageBase, Write
from kiln.storage.memory import MemoryStorage

RECORDS = 10_000
ROUNDS = 20
PATTERNS = {
    "substring": "needle",
    "prefix": "needle*",
    "no match": "zzzzqqq",
    "many wildcards": "*a" * 20 + "*b",
    "one char": "e",
}


def words(rng: random.Random, count: int) -> str:
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(count)
    )


def fill(storage: StorageBase, non_ascii: bool) -> None:
    rng = random.Random(15)
    writes = []
    for index in range(RECORDS):
        name = words(rng, 6) + (" café" if non_ascii else "")
        if index % 10 == 0:
            name = f"{name} needle {words(rng, 2)}"
        record = {"name": name, "n": index}
        writes.append(Write("item", "bench", f"r{index:05d}", record, ABSENT))
        if len(writes) == 500:
            storage.apply(writes, commit=True)
            writes = []


def measure(storage: StorageBase, pattern: str, limit: int | None) -> list[float]:
    filters = [Filter("name", pattern, Operator.LIKE)]
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        storage.list_all("item", "bench", filters=filters, limit=limit)
        times.append((time.perf_counter() - started) * 1000)
    return times


@contextmanager
def backends(args: argparse.Namespace) -> Iterator[dict[str, StorageBase]]:
    from kiln.storage.sqlite import SQLiteStorage

    chosen: dict[str, StorageBase] = {"memory": MemoryStorage()}
    with tempfile.TemporaryDirectory() as directory:
        chosen["sqlite"] = SQLiteStorage(SQLiteDatabase(str(Path(directory) / "like.sqlite")))
        if args.postgresql:
            from kiln.storage.postgresql import PostgreSQLStorage

            chosen["postgresql"] = PostgreSQLStorage(PostgreSQLDatabase(args.postgresql))
        if args.redis:
            from kiln import _redis
            from kiln.storage.redis import RedisStorage

            chosen["redis"] = RedisStorage(_redis.acquire(args.redis))
        try:
            yield chosen
        finally:
            for storage in chosen.values():
                storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgresql", help="a PostgreSQL URL (its records are flushed)")
    parser.add_argument("--redis", help="a Redis URL (its database is flushed)")
    parser.add_argument("--only", help="backends to measure, comma-separated")
    parser.add_argument(
        "--non-ascii", action="store_true", help="every name holds a non-ASCII letter"
    )
    args = parser.parse_args()
    with backends(args) as chosen:
        print(f"{'backend':<11} {'pattern':<15} {'page of 10':>22} {'every match':>22}")
        for name, storage in chosen.items():
            if args.only and name not in args.only.split(","):
                continue
            storage.initialize_schema()
            storage.flush()
            fill(storage, args.non_ascii)
            for label, pattern in PATTERNS.items():
                cells = []
                for limit in (10, None):
                    times = sorted(measure(storage, pattern, limit))
                    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                    cells.append(f"{statistics.median(times):6.1f} / {p99:6.1f} ms")
                print(f"{name:<11} {label:<15} {cells[0]:>22} {cells[1]:>22}")
            storage.flush()


if __name__ == "__main__":
    main()
