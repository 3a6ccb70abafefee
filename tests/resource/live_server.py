"""kiln apps served over loopback, and an HTTP client for them.

- :func:`serve_in_thread`: werkzeug's threaded server in a thread of the test
  process (one server thread per client connection).
- :func:`serve_with_gunicorn`: a real ``gunicorn`` (several worker processes,
  several threads each) on a socket the test process binds and hands over,
  so there is no race for a free port.
- :class:`Client`: urllib3 over a shared pool, safe to use from many threads.
- :func:`together`: run a function in N threads released at once by a barrier.

Everything is bounded: startup, requests, joins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gunicorn.config
import orjson
import urllib3
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")

# gunicorn >= 23 opens a control socket in ~/.gunicorn; two servers would share it.
_NO_CONTROL_SOCKET = [
    "--no-control-socket"
    for setting in gunicorn.config.KNOWN_SETTINGS
    if setting.name == "control_socket_disable"
]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextlib.contextmanager
def serve_in_thread(app: Flask) -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1:<ephemeral>``; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def serve_with_gunicorn(
    config: dict[str, Any], directory: Path, *, workers: int = 3, threads: int = 4
) -> Iterator[str]:
    """Serve ``kiln.wsgi:application`` with ``KILN_CONFIG`` holding ``config``."""
    config_file = directory / "kiln-config.json"
    config_file.write_text(json.dumps(config))
    log = directory / "gunicorn.log"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    args = [
        str(BIN / "gunicorn"),
        "kiln.wsgi:application",
        "--bind",
        f"fd://{listener.fileno()}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--graceful-timeout",
        "3",
        *_NO_CONTROL_SOCKET,
    ]
    env = {**os.environ, "KILN_CONFIG": str(config_file), "HOME": str(directory)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
    listener.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, url, log, workers)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck gunicorn
            process.kill()
            process.wait(5)


def _wait_until_serving(
    process: subprocess.Popen[bytes], url: str, log: Path, workers: int
) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1, read=2))
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({process.returncode}):\n{log.read_text()}")
            booted = log.read_text().count("Booting worker")
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if (
                    booted >= workers
                    and http.request("GET", url + "/__lbheartbeat__").status == 200
                ):
                    return
            time.sleep(0.05)
    finally:
        http.clear()
    raise RuntimeError(f"gunicorn did not serve {url} within 15 s:\n{log.read_text()}")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def etag(self) -> int:
        return int(self.headers["ETag"].strip('"'))


class Client:
    """JSON over HTTP to ``base`` (like ``http://127.0.0.1:1234/v1``), from any thread."""

    def __init__(self, base: str, *, pool_size: int = 32) -> None:
        self.base = base
        self.http = urllib3.PoolManager(
            maxsize=pool_size,
            # Only connection failures are retried: a write is never sent twice.
            retries=urllib3.Retry(
                total=3,
                connect=3,
                read=0,
                redirect=0,
                status=0,
                other=0,
                respect_retry_after_header=False,
                raise_on_status=False,
            ),
            timeout=urllib3.Timeout(connect=5, read=20),
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        raw: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = orjson.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        response = self.http.request(
            method, self.base + path, body=data, headers=sent, redirect=False
        )
        content = response.data
        parsed: Any = content
        if content and response.headers.get("Content-Type", "").startswith("application/json"):
            parsed = orjson.loads(content)
        return Reply(response.status, dict(response.headers), parsed)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def close(self) -> None:
        self.http.clear()


def together(count: int, work: Callable[[int], T], *, timeout: float = 60) -> list[T]:
    """``[work(0), …, work(count - 1)]``, each in its own thread, all started at once."""
    barrier = threading.Barrier(count, timeout=10)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{count} concurrent clients did not finish within {timeout} s.")
    if errors:
        raise errors[0]
    return results
