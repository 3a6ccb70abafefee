"""How long a cascade takes to find the children of a parent, per backend.

Not a test: a measure. Fills the storage with ``--records`` records spread
over 100 buckets of 10 collections (Kinto's layout: ``bucket``,
``collection`` and ``record`` resources), runs ``ANALYZE`` (the planner's
statistics change its plans: measure with them), then times
``list_descendants`` -- the read a cascade makes before its deletes -- for one
collection and for one bucket, and, for reference, a statement reading the
``parent_id`` of every record (what it did before it read the index by
ranges). Prints the median and p99 of each in milliseconds.

    .venv/bin/python bench/cascade.py                      # SQLite
    .venv/bin/python bench/cascade.py --postgresql URL     # + PostgreSQL (its records are flushed)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kiln._postgresql import PostgreSQLDatabase
from kiln._sqlite import SQLiteDatabase
from kiln.storage import ABSENT, StorageBase, Write

ROUNDS = 20
BUCKETS = 100
COLLECTIONS = 10  # per bucket
#: What reading every record's ``parent_id`` costs, per backend: the whole table, once.
FULL_SCAN = {
    "sqlite": "SELECT count(*) FROM records WHERE deleted = 0 AND substr(parent_id, 1, 12) = ?",
    "postgresql": "SELECT count(*) FROM records WHERE NOT deleted AND starts_with(parent_id, %s)",
}


def fill(storage: StorageBase, records: int) -> None:
    writes = [Write("bucket", "", f"b{b}", {}, ABSENT) for b in range(BUCKETS)]
    writes += [
        Write("collection", f"/buckets/b{b}", f"c{c}", {}, ABSENT)
        for b in range(BUCKETS)
        for c in range(COLLECTIONS)
    ]
    storage.apply(writes, commit=True)
    writes = []
    for index in range(records):
        b, c = index % BUCKETS, index // BUCKETS % COLLECTIONS
        parent = f"/buckets/b{b}/collections/c{c}"
        writes.append(Write("record", parent, f"r{index:07d}", {"n": index}, ABSENT))
        if len(writes) == 5000:
            storage.apply(writes, commit=True)
            writes = []
    storage.apply(writes, commit=True)


def timed(call: Callable[[], object]) -> tuple[float, float, object]:
    times = []
    result = None
    for _ in range(ROUNDS):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], result


@contextmanager
def backends(args: argparse.Namespace) -> Iterator[dict[str, StorageBase]]:
    from kiln.storage.sqlite import SQLiteStorage

    with tempfile.TemporaryDirectory() as directory:
        chosen: dict[str, StorageBase] = {
            "sqlite": SQLiteStorage(SQLiteDatabase(str(Path(directory) / "cascade.sqlite")))
        }
        if args.postgresql:
            from kiln.storage.postgresql import PostgreSQLStorage

            chosen["postgresql"] = PostgreSQLStorage(PostgreSQLDatabase(args.postgresql))
        try:
            yield chosen
        finally:
            for storage in chosen.values():
                storage.close()


def full_scan(storage: StorageBase, name: str) -> Callable[[], object]:
    database = storage.database  # type: ignore[attr-defined]

    def scan() -> object:
        with database.transaction() as conn:
            return conn.execute(FULL_SCAN[name], ["/buckets/b7/"]).fetchone()[0]

    return scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgresql", help="a PostgreSQL URL (its records are flushed)")
    parser.add_argument("--records", type=int, default=300_000, help="records stored")
    args = parser.parse_args()
    with backends(args) as chosen:
        print(f"{args.records:,} records, {ROUNDS} rounds: median / p99 ms (children found)")
        for name, storage in chosen.items():
            storage.initialize_schema()
            storage.flush()
            began = time.perf_counter()
            fill(storage, args.records)
            with storage.database.transaction() as conn:  # type: ignore[attr-defined]
                conn.execute("ANALYZE")
            print(f"{name}: filled in {time.perf_counter() - began:.0f} s")
            cases = {
                "a collection": lambda s=storage: s.list_descendants(
                    ["/buckets/b7/collections/c7"]
                ),
                "a bucket": lambda s=storage: s.list_descendants(["/buckets/b7"]),
            }
            for label, call in cases.items():
                median, p99, found = timed(call)
                print(f"  {label:<14} {median:8.2f} / {p99:8.2f}  ({len(found):,})")  # type: ignore[arg-type]
            median, p99, _ = timed(full_scan(storage, name))
            print(f"  {'every parent':<14} {median:8.2f} / {p99:8.2f}  (reads every record)")
            storage.flush()


if __name__ == "__main__":
    main()
