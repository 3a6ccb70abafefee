"""``make loadtest-check-simulation``: serve the test application, load it briefly, check it.

    python -m loadtests.run [--config FILE]... [--storage-url URL]
                            [--locust-config FILE] [-- LOCUST ARGS...]

1. runs ``kiln migrate`` and starts the test application under gunicorn
   (2 workers, 4 threads) on a free port of 127.0.0.1, on a fresh SQLite file
   in a temporary directory (or on ``--storage-url``, e.g. a PostgreSQL URL);
2. runs locust headless with ``--locust-config`` (``loadtests/simulation.conf``),
   which stops after its ``hits`` or ``run-time``, then checks the invariants;
3. stops the server by its PID, whatever happened (also at exit), and exits
   with locust's status: non-zero on any request error or broken invariant.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import gunicorn.config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: How long the server may take to answer its first request, and locust to finish.
START_TIMEOUT = 60.0
LOCUST_TIMEOUT = 300.0
STOP_TIMEOUT = 15.0
# gunicorn >= 23 opens a control socket in ~/.gunicorn, which two servers would share.
NO_CONTROL_SOCKET = [
    "--no-control-socket"
    for setting in gunicorn.config.KNOWN_SETTINGS
    if setting.name == "control_socket_disable"
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(configs: Sequence[str], storage_url: str, workdir: Path) -> dict[str, str]:
    """The environment of ``kiln migrate`` and the server: configs, and where records go."""
    env = dict(os.environ)
    env["KILN_CONFIG"] = os.pathsep.join(str(Path(config).resolve()) for config in configs)
    if storage_url.startswith(("postgresql://", "postgres://")):
        env["KILN_STORAGE__BACKEND"] = "postgresql"
        env["KILN_STORAGE__URL"] = storage_url
    else:
        env["KILN_STORAGE__BACKEND"] = "sqlite"
        env["KILN_STORAGE__URL"] = storage_url or str(workdir / "testapp.sqlite")
    return env


class Server:
    """The test application under gunicorn, stopped by its PID."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        bind = f"127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "gunicorn", "kiln.wsgi:application", "--bind", bind,
            "--workers", "2", "--threads", "4", *NO_CONTROL_SOCKET,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/__lbheartbeat__", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"the server did not answer within {START_TIMEOUT:.0f} s:\n{self.tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's PID (gunicorn stops its workers), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", action="append", default=[],
        help="kiln config file(s) of the server, layered (default: loadtests/testapp.yaml).",
    )  # fmt: skip
    parser.add_argument(
        "--storage-url", default=os.environ.get("LOADTEST_STORAGE_URL", ""),
        help="A PostgreSQL URL (or SQLite file) for the server; default: a fresh SQLite file.",
    )  # fmt: skip
    parser.add_argument(
        "--locust-config", default=str(HERE / "simulation.conf"),
        help="locust's config file (users, hits, run-time...).",
    )  # fmt: skip
    parser.add_argument("locust_args", nargs="*", help="More arguments for locust, after --.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    configs = options.config or [str(HERE / "testapp.yaml")]
    with tempfile.TemporaryDirectory(prefix="kiln-loadtest-") as workdir:
        env = server_environment(configs, options.storage_url, Path(workdir))
        migrate = [sys.executable, "-m", "kiln.cli", "migrate"]
        done = subprocess.run(
            migrate, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            print(f"loadtests: kiln migrate failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return done.returncode
        server = Server(env, free_port(), Path(workdir) / "server.log")
        try:
            server.start()
            backend = env["KILN_STORAGE__BACKEND"]
            print(
                f"loadtests: serving {', '.join(configs)} ({backend}) on {server.url}", flush=True
            )
            locust = [
                sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"),
                "--config", options.locust_config, "--headless", "--host", server.url,
                *options.locust_args,
            ]  # fmt: skip
            status = subprocess.run(
                locust, cwd=ROOT, timeout=LOCUST_TIMEOUT, check=False
            ).returncode
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"loadtests: {exc}", file=sys.stderr)
            status = 1
        finally:
            server.stop()
        if status:
            print(f"loadtests: FAILED (exit status {status}); the server's last lines:")
            print(server.tail())
        else:
            print("loadtests: passed")
        return status


if __name__ == "__main__":  # pragma: no cover - `python -m loadtests.run`
    sys.exit(main())
