"""Instructions per request of kiln's WSGI app, counted by callgrind: a cost that
does not move with the machine's noise.

::

    .venv/bin/python bench/instructions.py --database postgresql --only get,create
    .venv/bin/python bench/instructions.py --variants off,metrics --kiln-src /work/old

Throughput on a shared 2-core machine moves by 10 % from run to run; a change
that costs 2 % cannot be seen there. Instructions can: for the same code,
inputs and interpreter, callgrind counts the same number whatever else the
machine is doing. This counts them for each operation and variant:

- ``off``: the ``kiln`` target of :mod:`bench.resources` (the same config:
  ``basicauth``, resource-level principals, logging at WARNING);
- ``metrics``: the same with StatsD (to a loopback socket nobody reads) and
  Prometheus (multiprocess files) on.

For each pair, a child process builds the app, sends 300 requests of the
benchmark's clients (:class:`bench.resources.Client`) straight to the WSGI
callable to warm up, and then ``--requests`` more, plus one export of the
metrics those recorded, all inside one ``functools.reduce`` call: callgrind
runs with ``--collect-atstart=no --toggle-collect=functools_reduce``, so
only they are counted (imports, app building, seeding and the warm-up are
not). What it reports is that count over ``--requests``. Like
:mod:`bench.profile` it is one thread: it shows the work a request costs,
not lock waits or GIL hand-offs (:mod:`bench.resources` measures those).

The database is seeded once (``--records``, through kiln's own backends, as
:mod:`bench.resources` does) and shared by every child: ``create`` adds
records, which no other operation here looks at. A child takes a minute or
two (callgrind runs Python about 50 times slower).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/instructions.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench import resources  # noqa: E402

#: Operations whose requests need nothing of the answers before them (``patch``
#: needs each record's latest ETag, ``delete`` records left to delete).
OPERATIONS = ("get", "list", "create")
VARIANTS = ("off", "metrics")
WARM_UP = 300


def child(op: str, variant: str, requests: int, config_path: Path, records: int) -> None:
    """Build the app and run the counted requests (the process callgrind runs)."""
    from bench.profile import call, environ_for

    from kiln import create_app
    from kiln.application import state_of
    from kiln.config import Configuration, deep_merge

    config = yaml.safe_load(config_path.read_text())
    if variant == "metrics":
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        metrics = {"statsd_url": f"udp://127.0.0.1:{sink.getsockname()[1]}", "prometheus": True}
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kiln-instructions-")
        config = deep_merge(copy.deepcopy(config), {"metrics": metrics})
    import kiln.metrics

    kiln.metrics.EXPORT_SECONDS = 3600  # the counted export is the one below
    app = create_app(Configuration.from_mapping(config))
    ids = [object_id for object_id, _ in resources.dataset(records, random.Random(42))]
    client = resources.Client(op, list(ids), {}, list(ids), seed_=1)
    for _ in range(WARM_UP):
        call(app, environ_for(client.request()))
    environs = [environ_for(client.request()) for _ in range(requests)]
    metrics_of_app = state_of(app).metrics
    # An older tree (--kiln-src) sent its values at the end of each request.
    recorder = metrics_of_app.recorder if metrics_of_app is not None else None
    export_now = getattr(recorder, "export", getattr(recorder, "flush", lambda: None))
    export_now()  # the warm-up's values are not counted

    def export() -> None:
        export_now()

    steps = [functools.partial(call, app, environ) for environ in environs] + [export]
    functools.reduce(lambda _, step: step(), steps, None)


def count(op: str, variant: str, args: argparse.Namespace, config_path: Path, tmp: Path) -> int:
    """Instructions per request of ``op`` on ``variant``, from a callgrind run."""
    env = dict(os.environ)
    if args.kiln_src:
        env["PYTHONPATH"] = f"{args.kiln_src.resolve() / 'src'}{os.pathsep}{ROOT}"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        f"--callgrind-out-file={tmp / f'callgrind.{op}.{variant}'}",
        sys.executable,
        __file__,
        "--child",
        op,
        variant,
        str(args.requests),
        str(config_path),
        str(args.records),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"{op} {variant}: callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1)) // args.requests


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        op, variant, requests, config_path, records = argv[1:]
        child(op, variant, int(requests), Path(config_path), int(records))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="get,create", help=f"among {','.join(OPERATIONS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"among {VARIANTS}")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgresql-url",
        default=resources.DEFAULT_POSTGRESQL_URL,
        help="server and base name of the database <name>_instructions (dropped and "
        "created by this script)",
    )
    parser.add_argument("--records", type=int, default=2_000, help="records seeded")
    parser.add_argument("--requests", type=int, default=600, help="requests counted")
    parser.add_argument(
        "--kiln-src", type=Path, help="count the kiln package of this source tree (its src/)"
    )
    args = parser.parse_args(argv)
    ops = [op for op in args.only.split(",") if op]
    variants = [variant for variant in args.variants.split(",") if variant]
    if not ops or set(ops) - set(OPERATIONS):
        parser.error(f"choose operations among {OPERATIONS}")
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"choose variants among {VARIANTS}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.records < WARM_UP + args.requests:
        parser.error("--records must cover the warm-up (300) and --requests")
    tmp = Path(tempfile.mkdtemp(prefix="kiln-instructions-"))
    url = ""
    try:
        if args.database == "sqlite":
            url = str(tmp / "kiln.sqlite")
        else:
            url = resources.recreate_database(args.postgresql_url, "instructions")
        config: dict[str, Any] = resources.kiln_config(
            resources.KILN_CONFIG, "kiln", args.database, url
        )
        config_path = tmp / "kiln.yaml"
        config_path.write_text(yaml.safe_dump(config))
        records = resources.dataset(args.records, random.Random(42))
        resources.seed_kiln(config, records, resources.bench_user_id(config), False)
        print(
            f"# instructions per request, {args.requests} requests after {WARM_UP}, "
            f"{args.database}, kiln at {resources._git_revision(args.kiln_src or ROOT)}",
            flush=True,
        )
        print("| operation | " + " | ".join(variants) + " |")
        print("|---|" + "---|" * len(variants))
        for op in ops:
            counts = [count(op, variant, args, config_path, tmp) for variant in variants]
            cells = [f"{counts[0]:,}"] + [
                f"{n:,} ({(n / counts[0] - 1) * 100:+.1f} %)" for n in counts[1:]
            ]
            print(f"| {op} | " + " | ".join(cells) + " |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.database == "postgresql" and url:
            with contextlib.suppress(Exception):
                resources.drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
