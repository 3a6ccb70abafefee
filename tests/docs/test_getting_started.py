"""The README's first screen and docs/getting-started.md, followed word for word.

The pages are the script: their command blocks run in a fresh virtualenv
(kiln installed from this clone, as the pages say), their Python blocks are
written where they say, and each ``$ command`` of a transcript must print
what the page shows (``...`` stands for anything). The only changes are
the clone's path, and a free port where the pages use 8888 or gunicorn's
default, so that the test never meets another server.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import free_port, running
from tests.test_wsgi import NO_CONTROL_SOCKET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(page: str, heading: str) -> str:
    """The text of ``page`` from ``heading`` to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = page.index(f"\n{heading}\n")
    end = page.find(f"\n{level} ", start + 1)
    return page[start : end if end != -1 else None]


def blocks(text: str, language: str = "") -> list[str]:
    """The fenced code blocks of ``text`` in ``language`` (``""``: those without one)."""
    found: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line.startswith("```"):
            current, fence_language = [], line[3:].strip()
        elif current is not None and line == "```":
            if fence_language == language:
                found.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return found


def transcript(block: str) -> list[tuple[str, list[str]]]:
    """``(command, expected lines)`` for each ``$ command`` of a console block."""
    steps: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.splitlines():
        if continued:
            command, expected = steps[-1]
            steps[-1] = (command + " " + line.strip().removesuffix("\\").strip(), expected)
        elif line.startswith("$ "):
            command = re.sub(r"\s+# .*$", "", line[2:])  # the page's comment
            steps.append((command.removesuffix("\\").strip(), []))
        else:
            steps[-1][1].append(line)
        continued = line.endswith("\\")
    return steps


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


class Shell:
    """Runs a page's commands in ``cwd`` with the fresh virtualenv activated."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("KILN_", "VIRTUAL_ENV", "COVERAGE_", "PYTHON"))
            and name != "CLAY_CONFIG"
        }

    def run(self, script: str, cwd: Path, port: int = 8888) -> str:
        activate = f". {self.home / '.venv' / 'bin' / 'activate'}\n"
        if not (self.home / ".venv").exists():
            activate = ""
        process = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", activate + script.replace("8888", str(port))],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert process.returncode == 0, f"{script}\n{process.stdout}\n{process.stderr}"
        return process.stdout

    def check(self, block: str, cwd: Path, port: int, replace: dict[str, str]) -> None:
        for command, expected in transcript(block):
            actual = self.run(command, cwd, port).splitlines()
            for old, new in replace.items():
                expected = [line.replace(old, new) for line in expected]
            assert len(actual) == len(expected), (command, actual, expected)
            for want, got in zip(expected, actual, strict=True):
                assert matches(want, got), (command, want, got)

    @contextlib.contextmanager
    def serving(self, command: str, cwd: Path, port: int) -> Iterator[None]:
        bin_dir = self.home / ".venv" / "bin"
        env = dict(self.env, PATH=f"{bin_dir}:{self.env['PATH']}")
        assignments = dict(word.split("=", 1) for word in command.split() if "=" in word)
        argv = [word for word in command.split() if "=" not in word]
        argv[0] = str(bin_dir / argv[0])
        url = f"http://127.0.0.1:{port}/__lbheartbeat__"
        log = cwd / f"server-{port}.log"
        with running(argv, cwd=cwd, env={**env, **assignments}, log=log, url=url):
            yield


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Shell:
    home = tmp_path_factory.mktemp("newcomer")
    shell = Shell(home)
    install = blocks(section(GETTING_STARTED, "## Install"))[0]
    assert "pip install /path/to/kiln" in install
    shell.run(install.replace("/path/to/kiln", str(ROOT)), home)
    return shell


def test_getting_started_can_be_followed_word_for_word(shell):
    home = shell.home
    create = blocks(section(GETTING_STARTED, "## Create a service"))[0].splitlines()
    assert create[-1] == "KILN_CONFIG=config.yaml kiln serve"
    shell.run("\n".join(create[:-1]), home)
    project = home / "bakery"
    views = project / "bakery" / "views.py"
    resource = blocks(section(GETTING_STARTED, "## Your first resource"), "python")[0]
    view = blocks(section(GETTING_STARTED, "## Your first view"), "python")[0]
    views.write_text(views.read_text() + "\n\n" + resource + "\n\n" + view)

    port = free_port()
    assert "`kiln serve -p 8000`" in GETTING_STARTED
    with shell.serving(f"{create[-1]} -p {port}", project, port):
        hello = blocks(section(GETTING_STARTED, "## Create a service"))[1]
        shell.check(hello, project, port, {})
        cakes = blocks(section(GETTING_STARTED, "## Your first resource"))[0]
        shell.check(cakes, project, port, {})
        assert '"loaves":2' in shell.run(f"curl -s localhost:{port}/v1/orders/2", project)

    check = blocks(section(GETTING_STARTED, "## Configure"))[1]
    shell.check(check, project, port, {"/home/you/bakery": str(project)})
    tests = blocks(section(GETTING_STARTED, "## Run the tests"))[0]
    assert "5 passed" in shell.run(tests, project)


def test_the_readme_first_screen_can_be_followed_word_for_word(shell):
    home = shell.home
    service = home / "readme"
    service.mkdir()
    install, commands = blocks(README, "console")[:2]
    # The install the shell fixture ran, with the clone in ./kiln: not run again
    # (pip would rebuild and reinstall the same kiln, for seconds).
    assert [command for command, _ in transcript(install)] == ["pip install ./kiln"]
    source = blocks(README, "python")[0]
    filename = source.splitlines()[0].removeprefix("# ")
    (service / filename).write_text(source)
    steps = [command for command, _ in transcript(commands)]
    assert steps[2] == "KILN_CONFIG=config.yaml kiln serve"
    assert steps[-1] == (
        "KILN_CONFIG=config.yaml gunicorn -c python:kiln.gunicorn kiln.wsgi:application"
    )
    shell.run(steps[0], service)
    assert shell.run(steps[1], service).endswith("is valid and the app builds.\n")
    port = free_port()
    with shell.serving(f"{steps[2]} -p {port}", service, port):
        created = shell.run(steps[3], service, port)
        assert '"name":"Amanita"' in created
        assert '"name":"Amanita"' in shell.run(steps[4], service, port)
    port = free_port()
    gunicorn = f"{steps[-1]} -b 127.0.0.1:{port} {' '.join(NO_CONTROL_SOCKET)}"
    with shell.serving(gunicorn, service, port):
        assert '"name":"Amanita"' in shell.run(steps[4], service, port)
