from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.__about__ import __version__

ROOT = Path(__file__).resolve().parent.parent
#: An install command naming kiln's distribution by the name it does not have.
WRONG_NAME = re.compile(r"pip install[^`\n]*?(?<![\w/.-])kiln(?![\w-])")


def test_the_distribution_is_kiln_framework_and_installs_kiln_and_its_command():
    distribution = importlib.metadata.distribution("kiln-framework")
    assert distribution.version == __version__
    entry_points = {(ep.group, ep.name): ep.value for ep in distribution.entry_points}
    assert entry_points[("console_scripts", "kiln")] == "kiln.cli:main"
    assert entry_points[("pytest11", "kiln")] == "kiln.testing"


def test_no_install_hint_names_the_distribution_kiln():
    files = [
        *ROOT.joinpath("src").rglob("*.py"),
        *ROOT.joinpath("docs").rglob("*.md"),
        ROOT / "README.md",
    ]
    wrong = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in WRONG_NAME.finditer(path.read_text(encoding="utf-8"))
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "text", ["pip install kiln", "`pip install kiln[redis]`", "pip install -U kiln"]
)
def test_the_wrong_name_pattern_finds_an_install_of_kiln(text):
    assert WRONG_NAME.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "pip install 'kiln-framework[redis]'",
        "pip install -e /path/to/kiln",
        "pip install -e ./kiln",
        "pip install kiln-framework",
    ],
)
def test_the_wrong_name_pattern_leaves_right_installs_alone(text):
    assert not WRONG_NAME.search(text)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_writes_no_colour_codes_into_a_pipe():
    output = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "  test " in output
    assert "\033" not in output
