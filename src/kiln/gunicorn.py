"""kiln's gunicorn settings and hooks: ``gunicorn -c python:kiln.gunicorn kiln.wsgi:application``.

gunicorn reads this module as its config file (``-c python:kiln.gunicorn``;
a config file of your own can ``from kiln.gunicorn import *`` and add to
it). It makes a configuration reload safe and cheap:

- The **master** loads the config once, before any worker: workers are
  forked with that tree and never read the files at boot. A worker started
  later -- after a crash, a ``--timeout`` kill, ``--max-requests`` -- gets
  the master's **last good** tree, even while the files are broken.
- ``SIGHUP`` to the master reloads the config there first
  (:func:`reload_config`). A broken file is refused (an ERROR line; the workers
  keep serving). A change that a running app can follow (the *Reload*
  column of ``docs/settings.md``) is applied **in place**: each worker
  gets ``SIGHUP`` and reloads too, without a restart, so reloads cost
  nothing in throughput. A change that needs a restart (``views``,
  ``storage.url``...) is first tried in a throwaway child that builds the
  app; only when it builds are the workers restarted (gunicorn's own
  reload), else the change is refused like a broken file.
- Every process counts its successful loads: ``GET /__config__`` answers the
  generation a worker serves and whether its last reload failed.
- With Prometheus's ``PROMETHEUS_MULTIPROC_DIR`` set, a worker that exits is
  forgotten by the live gauges (:func:`child_exit`): ``prometheus_client``'s
  ``mark_process_dead``.

gunicorn's own limits are set above kiln's (:data:`limit_request_line`,
:data:`limit_request_fields`, :data:`limit_request_field_size`), so kiln
answers an over-long URL or header itself, with a JSON 414 or 431, over the
range a client can realistically send (see ``docs/deployment.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from types import FrameType
from typing import Any

from kiln.config import CONFIG, needs_restart
from kiln.exceptions import KilnError

__all__ = [
    "APP_CHECK_SECONDS",
    "build_problem",
    "child_exit",
    "limit_request_field_size",
    "limit_request_fields",
    "limit_request_line",
    "on_starting",
    "post_worker_init",
    "reload_config",
]

#: gunicorn's longest request line (its maximum): kiln's own limit on the
#: URL, ``request.max_url_bytes``, answers first below it.
limit_request_line = 8190
#: gunicorn's most header fields: above kiln's ``request.max_headers`` (100).
limit_request_fields = 150
#: gunicorn's longest header field: above kiln's ``request.max_header_bytes`` (8190).
limit_request_field_size = 12288

#: Longest the master waits for a throwaway child to build the app.
APP_CHECK_SECONDS = 60.0


def on_starting(server: Any) -> None:
    """gunicorn hook, in the master before any worker: load the config, and
    reload it the kiln way on ``SIGHUP``.

    A config that does not load is left to the workers, which stop the
    master at boot with one sentence (``kiln.wsgi``).
    """
    # kiln's warnings and errors in the master go to gunicorn's error log, in its format.
    logging.getLogger("kiln").addHandler(_MasterLog(server.log.error_log, os.getpid()))
    try:
        CONFIG.config  # noqa: B018 -- the first load, which workers inherit
    except KilnError:
        return
    # The arbiter looks its signal handlers up on itself by name.
    server.handle_hup = lambda: reload_config(server)


class _MasterLog(logging.Handler):
    """Hands the master's kiln records to gunicorn's error log; in workers
    (forked with it) does nothing: kiln's logging configuration serves them."""

    def __init__(self, error_log: logging.Logger, pid: int) -> None:
        super().__init__()
        self.error_log = error_log
        self.pid = pid

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() == self.pid:
            self.error_log.handle(record)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, in the master when a worker has exited: with
    ``PROMETHEUS_MULTIPROC_DIR`` set, drop the worker's values of live gauges
    (``multiprocess_mode="livesum"`` and the other ``live*`` modes), which
    would otherwise count a dead process. Counters and histograms stay: a
    total never goes down when a worker is replaced."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]


def post_worker_init(worker: Any) -> None:
    """gunicorn hook, in each worker once the app is loaded: reload the config
    in place on ``SIGHUP`` (which the master sends, see :func:`reload_config`)."""
    signal.signal(signal.SIGHUP, _reload_worker)


def _reload_worker(signum: int, frame: FrameType | None) -> None:
    # Reloads in place never change the keys that need a restart: the tree in
    # effect holds those the app was built with.
    current = CONFIG.config
    CONFIG.load(check=lambda tree: _in_place_problem(current, tree))


def _in_place_problem(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    changed = needs_restart(old, new)
    if not changed:
        return None
    return (
        f"Changing {', '.join(changed)} needs new workers, which the master did not "
        "start (its log says why)."
    )


def reload_config(server: Any) -> None:
    """Reload the config in the master, then in the workers: in place, or by
    restarting them when a setting that needs it changed and the app builds.

    The master's ``SIGHUP`` handler, installed by :func:`on_starting` once the
    config loaded: there is always a last good tree to keep.
    """
    previous = CONFIG.config
    restart: list[str] = []

    def check(tree: dict[str, Any]) -> str | None:
        restart[:] = needs_restart(previous, tree)
        return build_problem(tree) if restart else None

    if CONFIG.load(check=check) and restart:
        server.log.info("kiln: %s changed; restarting the workers.", ", ".join(restart))
        type(server).handle_hup(server)
        return
    # In place; a failed reload too, so each worker says so (/__config__).
    for pid in list(server.WORKERS):
        with contextlib.suppress(ProcessLookupError):  # the worker just exited
            os.kill(pid, signal.SIGHUP)


def build_problem(tree: dict[str, Any]) -> str | None:
    """Build an app from ``tree`` in a throwaway child process: ``None`` when it
    builds, else the sentence saying why not."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        os.close(read)
        status = 0
        try:
            from kiln.application import create_app
            from kiln.config import Configuration

            create_app(Configuration.from_mapping(tree), configure_logging=False)
        except BaseException as exc:
            text = str(exc) if isinstance(exc, KilnError) else repr(exc)
            os.write(write, text.encode()[:4000])
            status = 1
        os._exit(status)
    os.close(write)
    try:
        message = _read_all(read, time.monotonic() + APP_CHECK_SECONDS)
    finally:
        os.close(read)
    if message is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return f"Building the app took more than {APP_CHECK_SECONDS:g} s."
    _, status = os.waitpid(pid, 0)
    if status == 0:
        return None
    return f"The app does not build with this config: {message or 'its builder died.'}"


def _read_all(fd: int, deadline: float) -> str | None:
    """Everything written on ``fd`` until its writer closes it, or ``None`` at
    ``deadline``."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)
