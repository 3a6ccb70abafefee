"""Where kiln's time goes, per operation: cProfile over requests through kiln's WSGI app.

::

    .venv/bin/python bench/profile.py                                   # SQLite, every operation
    .venv/bin/python bench/profile.py --targets kiln-shareable --only create,batch
    .venv/bin/python bench/profile.py --database postgresql --top 30 --output /tmp/profiles

For each kiln target of ``bench/resources.py`` (``kiln``: a plain
``Resource``, ``kiln-shareable``: ``ShareableResource`` buckets, collections
and records) this builds the same app from the same configuration
(:func:`bench.resources.kiln_config`: the same views, ``basicauth``, logging
at WARNING, principals), seeds the same ``--records`` records through kiln's
storage and permission backends, and then, for each operation, sends the
requests the benchmark's clients send (:class:`bench.resources.Client`, the
bench user's credentials, the same ``mixed`` draw) straight to the WSGI
callable, ``app(environ, start_response)``, as gunicorn does, in one thread:

1. a warm-up of a tenth of the requests, not measured;
2. a timed pass: wall time of the app calls alone, in ms per request, with
   the profiler off;
3. a profiled pass of as many requests, where cProfile runs only around the
   app calls (building the environ and checking the answer are outside).

It prints, per target and operation, the unprofiled ms per request and the
top functions by own time and by cumulative time, per request, with the
share of the profiled time. ``--output DIR`` also writes each profile as
``DIR/<target>-<operation>.prof`` (``pstats``; snakeviz or gprof2dot read
it).

Why cProfile and not py-spy against a gunicorn worker: a deterministic
profile counts every call, so how many statements a create sends or how
many validations a batch makes is read off exactly and compares run to run, it
needs no ptrace permission (often missing in containers) and no extra tool,
and one thread of one process isolates the request path from the load
generator and the other clients. Its price is overhead on small functions
(the profiled pass runs two to three times slower), hence the unprofiled figure
beside it. What it cannot show is concurrency: lock waits, GIL hand-offs
between gunicorn's threads; ``bench/resources.py`` measures those.

On SQLite the database is a file in a temporary directory; on PostgreSQL
each target gets ``<name>_profile_kiln`` or ``<name>_profile_kiln_shareable``
on the ``--postgresql-url`` server, dropped and created afresh, dropped at
the end unless ``--keep``. Every operation runs in about a minute at most
with the default request counts (:data:`REQUESTS`), on a busy 2-core machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/profile.py``, Python puts bench/ first on the path, where
# this file would shadow the standard library's ``profile`` that cProfile imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
ROOT = _HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

from bench import resources  # noqa: E402
from werkzeug.datastructures import Headers  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

TARGETS = ("kiln", "kiln-shareable")
STDLIB = sysconfig.get_paths()["stdlib"]
#: Requests per operation (each pass), sized for about a minute at most per operation.
REQUESTS = {
    "get": 1000,
    "list": 200,
    "mixed": 500,
    "create": 500,
    "patch": 500,
    "batch": 40,
    "delete": 500,
}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Answer(NamedTuple):
    """An app's answer, shaped as :meth:`bench.resources.Client.check` reads it."""

    status: int
    headers: Headers
    data: bytes


def environ_for(request: resources.Request) -> dict[str, Any]:
    """The WSGI environ a gunicorn worker would build for ``request`` (urllib3's headers)."""
    path, _, query = request.path.partition("?")
    headers = {"User-Agent": "python-urllib3", "Accept-Encoding": "identity", **request.headers}
    builder = EnvironBuilder(
        path=path,
        method=request.method,
        query_string=query,
        headers=headers,
        data=request.body or b"",
        base_url="http://127.0.0.1:8888",
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """One request through the WSGI callable: the status, headers and body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    iterable = app(environ, start_response)
    try:
        body = b"".join(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return Answer(int(started[0][:3]), Headers(started[1]), body)


class Pass(NamedTuple):
    requests: int
    errors: int
    seconds: float  # in the app calls only
    first_error: str


def run_pass(
    app: WSGIApp, client: resources.Client, requests: int, profiler: cProfile.Profile | None
) -> Pass:
    """``requests`` requests of ``client``; ``profiler`` (if any) on around each app call."""
    done = errors = 0
    spent = 0.0
    first_error = ""
    clock = time.perf_counter
    for _ in range(requests):
        request = client.request()
        if request is None:
            break
        environ = environ_for(request)
        began = clock()
        if profiler is not None:
            profiler.enable()
            answer = call(app, environ)
            profiler.disable()
        else:
            answer = call(app, environ)
        spent += clock() - began
        done += 1
        if not client.check(request, answer):  # type: ignore[arg-type]
            errors += 1
            first_error = first_error or (
                f"{request.method} {request.path}: {answer.status} {answer.data[:300]!r}"
            )
    return Pass(done, errors, spent, first_error)


def _where(key: tuple[str, int, str]) -> str:
    """``kiln/resource/endpoints.py:123 create``, ``{built-in} <method 'execute' ...>``."""
    filename, line, function = key
    if filename == "~":
        return f"{{built-in}} {function}"
    for marker in ("/site-packages/", f"{ROOT}/src/", f"{ROOT}/", f"{STDLIB}/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line} {function}"


def _harness(key: tuple[str, int, str]) -> bool:
    return key[0] == __file__ or "_lsprof.Profiler" in key[2]


def top_functions(profile: pstats.Stats, requests: int, sort: str, top: int) -> str:
    """The ``top`` functions by ``sort`` (``tottime`` or ``cumtime``), per request."""
    entries = profile.stats  # type: ignore[attr-defined]
    total = profile.total_tt  # type: ignore[attr-defined]
    index = 2 if sort == "tottime" else 3
    # The harness's own frames (its ``call`` wrapper, the profiler's switch) are not kiln's.
    shown = {key: entry for key, entry in entries.items() if not _harness(key)}
    ranked = sorted(shown.items(), key=lambda item: item[1][index], reverse=True)[:top]
    lines = ["     own ms    cum ms  own %   calls  (per request)"]
    for key, (_, calls, own, cumulative, _) in ranked:
        lines.append(
            f"  {own / requests * 1000:9.4f} {cumulative / requests * 1000:9.4f} "
            f"{own / total * 100 if total else 0:5.1f}% {calls / requests:7.1f}  {_where(key)}"
        )
    return "\n".join(lines)


def profile_target(target: str, args: argparse.Namespace, tmp: Path) -> None:
    """Seed ``target``'s database, build its app, profile each operation."""
    from kiln import create_app
    from kiln.application import close_app
    from kiln.config import Configuration

    if args.database == "sqlite":
        url = str(tmp / f"{target}.sqlite")
    else:
        url = resources.recreate_database(
            args.postgresql_url, f"profile_{target.replace('-', '_')}"
        )
        args.databases.append(url)
    config = resources.kiln_config(resources.KILN_CONFIG, target, args.database, url)
    owner = resources.bench_user_id(config)
    records = resources.dataset(args.records, random.Random(42))
    began = time.perf_counter()
    etags = resources.seed_kiln(config, records, owner, target == "kiln-shareable")
    seeded = time.perf_counter() - began
    app = create_app(Configuration.from_mapping(config))
    ids = [object_id for object_id, _ in records]
    print(
        f"# {target}: {args.database}, {args.records:,} records seeded in {seeded:.1f}s",
        flush=True,
    )
    for op in args.ops:
        requests = args.requests or REQUESTS[op]
        # One client owning every record: it may patch and delete them all, as the
        # benchmark's clients do with their shares.
        client = resources.Client(op, ids, etags, ids, seed_=1)
        started = time.perf_counter()
        run_pass(app, client, _sent(requests) - 2 * requests, None)
        timed = run_pass(app, client, requests, None)
        profiler = cProfile.Profile()
        profiled = run_pass(app, client, requests, profiler)
        ids[:] = client.ids  # what delete and mixed left, what mixed created
        stats = pstats.Stats(profiler)
        per_request = timed.seconds / timed.requests * 1000 if timed.requests else float("nan")
        profiled_ms = profiled.seconds / profiled.requests * 1000 if profiled.requests else 0.0
        print(
            f"\n## {target}, {op}: {timed.requests} requests, {per_request:.3f} ms per request "
            f"unprofiled ({profiled_ms:.3f} ms profiled), "
            f"{timed.errors + profiled.errors} errors; "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
        first_error = timed.first_error or profiled.first_error
        if first_error:
            print(f"   first error: {first_error}")
        if not profiled.requests:
            continue
        for sort, title in (("tottime", "own time"), ("cumtime", "cumulative time")):
            print(f"\nTop {args.top} by {title}:")
            print(top_functions(stats, profiled.requests, sort, args.top))
        if args.output:
            args.output.mkdir(parents=True, exist_ok=True)
            stats.dump_stats(args.output / f"{target}-{op}.prof")
    close_app(app)


def _sent(requests: int) -> int:
    """Requests sent for an operation of ``requests`` per pass: warm-up and two passes."""
    return max(1, requests // 10) + 2 * requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated among {','.join(TARGETS)}"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated among {','.join(resources.OPERATIONS)}"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgresql-url",
        default=resources.DEFAULT_POSTGRESQL_URL,
        help="server and base name of the databases <name>_profile_kiln and "
        "<name>_profile_kiln_shareable (dropped and created by this script)",
    )
    parser.add_argument("--records", type=int, default=5_000, help="records seeded per target")
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="requests per pass for every operation (default: per operation, "
        + ", ".join(f"{op} {n}" for op, n in REQUESTS.items())
        + ")",
    )
    parser.add_argument("--top", type=int, default=20, help="functions shown per ranking")
    parser.add_argument("--output", type=Path, help="write <target>-<operation>.prof files here")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.only.split(",") if op.strip()] or list(resources.OPERATIONS)
    if set(ops) - set(resources.OPERATIONS):
        parser.error(f"unknown operations; choose among {resources.OPERATIONS}")
    args.ops = [op for op in resources.OPERATIONS if op in ops]  # delete last
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - set(TARGETS):
        parser.error(f"choose targets among {TARGETS}")
    # Records deleted: every delete request of the three passes, and (generously) a
    # tenth of the mixed ones (5 % of them delete).
    needed = 0
    if "delete" in args.ops:
        needed += _sent(args.requests or REQUESTS["delete"])
    if "mixed" in args.ops:
        needed += _sent(args.requests or REQUESTS["mixed"]) // 10
    if args.records < needed:
        parser.error(f"--records must be at least {needed} for delete and mixed")
    args.databases = []
    tmp = Path(tempfile.mkdtemp(prefix="kiln-profile-"))
    try:
        for target in [t for t in TARGETS if t in targets]:
            profile_target(target, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep:
            for url in args.databases:
                with contextlib.suppress(Exception):
                    resources.drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
