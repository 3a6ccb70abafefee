"""``make kinto-compat``: kinto-http's functional suite against examples/kinto.

1. downloads kinto-http's sdist into ``.cache/kinto-http`` (once) and
   installs it, with pytest, pytest-asyncio and pytest-mock, into a venv of
   its own there (``.cache/kinto-http/venv``: pytest-asyncio in kiln's dev
   venv would break kiln's own suite, whose warnings are errors);
2. translates the suite's ``tests/config/kinto.ini`` into kiln settings
   (``examples/kinto/kinto_ini.py``), plus ``suite.yaml`` (cheap password
   hashing for this test deployment);
3. starts ``kiln serve`` on ``examples/kinto`` with them, on a free loopback
   port (``--backend postgresql``: on ``$KILN_TEST_POSTGRESQL_URL``);
4. runs ``tests/test_functional.py`` and ``tests/test_functional_async.py``
   unedited, ``SERVER_URL`` pointed at the server by ``kinto_compat_plugin``;
5. stops the server by its PID. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator

VERSION = "11.11.0"
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(EXAMPLE))
CACHE = os.path.join(ROOT, ".cache", "kinto-http")
SUITE = ("tests/test_functional.py", "tests/test_functional_async.py")


def run(*command: str, **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def sdist() -> tuple[str, str]:
    """The extracted sdist, and the Python of the venv it is installed in
    (both made when needed)."""
    archive = os.path.join(CACHE, f"kinto_http-{VERSION}.tar.gz")
    source = os.path.join(CACHE, f"kinto_http-{VERSION}")
    if not os.path.exists(archive):
        os.makedirs(CACHE, exist_ok=True)
        try:
            run(
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"kinto-http=={VERSION}",
                "-d",
                CACHE,
            )
        except subprocess.CalledProcessError:
            raise SystemExit(
                f"kinto-http {VERSION}'s sdist could not be downloaded: put "
                f"kinto_http-{VERSION}.tar.gz in {CACHE} and run again."
            ) from None
    if not os.path.isdir(source):
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    venv = os.path.join(CACHE, "venv")
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, f"kinto-http-{VERSION}.installed")
    if not os.path.exists(stamp):
        run(sys.executable, "-m", "venv", "--clear", venv)
        run(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            archive,
            "pytest",
            "pytest-asyncio",
            "pytest-mock",
        )
        open(stamp, "w").close()
    return source, python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(config: str, port: int, env: dict[str, str]) -> Iterator[str]:
    kiln = os.path.join(os.path.dirname(sys.executable), "kiln")
    command = [kiln, "serve", "-H", "127.0.0.1", "-p", str(port), "--no-reload"]
    log = open(os.path.join(CACHE, "server.log"), "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command, cwd=ROOT, env={**env, "KILN_CONFIG": config}, stdout=log, stderr=log
    )
    print(f"+ KILN_CONFIG={config} {' '.join(command)}  (PID {process.pid})", flush=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"The server exited at startup; see {log.name}.")
            try:
                urllib.request.urlopen(f"{url}/__lbheartbeat__", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"The server did not answer; see {log.name}.") from None
                time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("memory", "postgresql"), default="memory")
    # Any other argument (-k ..., -x) goes to pytest.
    args, pytest_args = parser.parse_known_args()
    source, python = sdist()
    overlay = os.path.join(CACHE, "suite.json")
    with open(overlay, "w") as out:
        run(
            sys.executable,
            os.path.join(EXAMPLE, "kinto_ini.py"),
            os.path.join(source, "tests", "config", "kinto.ini"),
            stdout=out,
        )
    files = [os.path.join(EXAMPLE, "config.yaml")]
    env = dict(os.environ)
    if args.backend == "postgresql":
        files.append(os.path.join(EXAMPLE, "postgresql.yaml"))
        if env.get("KILN_TEST_POSTGRESQL_URL"):
            env["KILN_STORAGE__URL"] = env["KILN_TEST_POSTGRESQL_URL"]
    files += [overlay, os.path.join(HERE, "suite.yaml")]
    with server(":".join(files), free_port(), env) as url:
        suite_env = {**env, "KINTO_SERVER_URL": url, "PYTHONPATH": HERE}
        return subprocess.run(
            [
                python,
                "-m",
                "pytest",
                "-p",
                "kinto_compat_plugin",
                "-p",
                "no:cacheprovider",
                "-o",
                "asyncio_default_fixture_loop_scope=function",
                "-q",
                *SUITE,
                *pytest_args,
            ],
            cwd=source,
            env=suite_env,
            check=False,
        ).returncode


if __name__ == "__main__":
    sys.exit(main())
