"""The WSGI entry point: ``gunicorn -c python:kiln.gunicorn kiln.wsgi:application``.

Importing this module builds the process-wide app from ``KILN_CONFIG`` (or
``CLAY_CONFIG``); under kiln's gunicorn config (:mod:`kiln.gunicorn`) from
the config the master loaded before forking the worker. A configuration or
startup error is printed as one sentence and the worker exits with
gunicorn's boot-error code (3), so the arbiter stops instead of restarting
a worker that can never start.

With several workers every one of them fails the same way, but gunicorn
must see one boot error only: a second one, arriving while the arbiter
stops the others, makes it raise again from its shutdown (a traceback, and
exit status 1). So the first worker of an arbiter to fail reports and
exits with 3; the others leave without a word once the arbiter has taken
that report, with status 0, which it ignores while it stops.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from typing import NoReturn

from kiln.application import get_app
from kiln.exceptions import KilnError

__all__ = ["application", "claim_report"]

WORKER_BOOT_ERROR = 3
#: Longest a worker waits for the arbiter to take the first worker's report.
SIBLING_WAIT_SECONDS = 10.0


def _in_gunicorn_worker() -> bool:
    # A gunicorn worker has installed its own handlers before it imports the app.
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return type(owner).__module__.startswith("gunicorn.workers.")


def _arbiter() -> str:
    """The arbiter's process id, with its start time where ``/proc`` has it (ids are reused)."""
    pid = os.getppid()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            started = stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):  # pragma: no cover - not Linux
        started = "?"
    return f"{pid}@{started}"


def claim_report(arbiter: str, path: str | None = None) -> int | None:
    """Claim the report of ``arbiter``'s boot failure for this worker.

    Returns ``None`` when this worker is the first of the arbiter's to fail
    (it reports), else the process id of the one that reports. The claim,
    ``<arbiter> <reporter pid>``, is kept in a per-user file (``path``, by
    default in the temporary directory) and changed under an exclusive lock.
    """
    import fcntl

    if path is None:
        path = os.path.join(tempfile.gettempdir(), f"kiln-gunicorn-boot-{os.getuid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "r+", encoding="ascii") as claim:
        fcntl.flock(claim, fcntl.LOCK_EX)
        fields = claim.read().split()
        if len(fields) == 2 and fields[0] == arbiter and fields[1].isdigit():
            return int(fields[1])
        claim.seek(0)
        claim.truncate()
        claim.write(f"{arbiter} {os.getpid()}")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process took the id
        return True
    return True


def _stop_worker(exc: KilnError) -> NoReturn:
    if _in_gunicorn_worker():
        reporter = claim_report(_arbiter())
        if reporter is not None:
            # The arbiter reaps the reporter, then stops every worker.
            deadline = time.monotonic() + SIBLING_WAIT_SECONDS
            while _alive(reporter) and time.monotonic() < deadline:
                time.sleep(0.05)
            raise SystemExit(0) from None
    sys.stderr.write(f"kiln: cannot start: {exc}\n")
    raise SystemExit(WORKER_BOOT_ERROR) from None


try:
    application = get_app()
except KilnError as exc:
    _stop_worker(exc)
