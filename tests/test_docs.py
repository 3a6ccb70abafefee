from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from kiln.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_settings_reference_is_generated_from_the_code():
    result = CliRunner().invoke(main, ["settings", "--format", "markdown"])
    assert result.exit_code == 0
    assert (ROOT / "docs" / "settings.md").read_text(encoding="utf-8") == result.output, (
        "docs/settings.md is stale: run `make docs`."
    )


def test_every_relative_link_in_the_docs_points_at_a_file():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert broken == []
