from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))

# The public modules: every module of kiln that docs/ names (kept in sync by
# test_every_module_the_docs_name_is_public), and kiln.views, the utility
# endpoints of docs/application.md. Modules starting with "_" are private.
PUBLIC_MODULES = (
    "kiln",
    "kiln.application",
    "kiln.attachments",
    "kiln.auth",
    "kiln.auth.accounts",
    "kiln.auth.web",
    "kiln.cache",
    "kiln.cache.redis",
    "kiln.cache.testing",
    "kiln.cli",
    "kiln.config",
    "kiln.cors",
    "kiln.database",
    "kiln.docs",
    "kiln.eos",
    "kiln.errors",
    "kiln.exceptions",
    "kiln.gunicorn",
    "kiln.http",
    "kiln.logging",
    "kiln.mail",
    "kiln.metrics",
    "kiln.migrations",
    "kiln.permission",
    "kiln.permission.memory",
    "kiln.permission.postgresql",
    "kiln.permission.redis",
    "kiln.permission.sqlite",
    "kiln.permission.testing",
    "kiln.resource",
    "kiln.resource.access",
    "kiln.resource.dispatch",
    "kiln.resource.endpoints",
    "kiln.resource.events",
    "kiln.resource.unit_of_work",
    "kiln.resource.views",
    "kiln.stats",
    "kiln.storage",
    "kiln.storage.sqlite",
    "kiln.storage.testing",
    "kiln.testing",
    "kiln.tracing",
    "kiln.views",
    "kiln.wsgi",
)

# Names a module serves from its __getattr__ on first access instead of binding them.
LAZY = {"kiln": {"app"}}

# Modules another change of issue #10 is editing, whose __all__ lacks public names:
# that change completes them (and removes them from here).
INCOMPLETE: dict[str, str] = {}


def _module(dotted: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return None


def _references() -> list[list[str]]:
    """Each dotted ``kiln...`` name the docs write, split, and each ``from kiln... import``."""
    text = "\n".join(path.read_text() for path in DOCS)
    rv = [ref.split(".") for ref in re.findall(r"\bkiln(?:\.\w+)+", text)]
    for module, names in re.findall(r"from (kiln(?:\.\w+)*) import ([\w, ]+)", text):
        rv += [[*module.split("."), name.strip()] for name in names.split(",")]
    return rv


def _documented() -> tuple[set[str], dict[str, set[str]]]:
    """The public modules the docs name, and the names they document in each."""
    modules: set[str] = set()
    names: dict[str, set[str]] = {}
    for parts in _references():
        for end in range(len(parts), 0, -1):
            module = _module(".".join(parts[:end]))
            if module is None:
                continue
            if not any(part.startswith("_") for part in parts[:end]):
                modules.add(module.__name__)
            # A name the module has; "kiln.sqlite" (a file) or a submodule is not one.
            if end < len(parts) and _exists(module, parts[end]):
                attribute = vars(module).get(parts[end])
                if not isinstance(attribute, types.ModuleType):
                    names.setdefault(module.__name__, set()).add(parts[end])
            break
    return modules, names


def _exists(module: types.ModuleType, name: str) -> bool:
    return name in vars(module) or name in LAZY.get(module.__name__, ())


def _defined(module: types.ModuleType) -> set[str]:
    """The functions and classes the module's source defines, but private ones and
    pytest hooks (``from kiln.testing import *`` must not register them twice)."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith(("_", "pytest_"))
    }


def _isort_key(name: str) -> tuple[int, list[int | str]]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then the rest; natural sort in each.
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _completeness_cases() -> list[object]:
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True,
                reason=f"{INCOMPLETE[name]}, edited in another change, must list more names",
            ),
        )
        if name in INCOMPLETE
        else name
        for name in PUBLIC_MODULES
    ]


def test_every_module_the_docs_name_is_public():
    modules, _ = _documented()
    assert sorted(modules - set(PUBLIC_MODULES)) == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_lists_existing_names(name):
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(set(exported), key=_isort_key)
    assert [member for member in exported if not _exists(module, member)] == []


@pytest.mark.parametrize("name", _completeness_cases())
def test_all_lists_every_function_class_and_documented_name(name):
    module = importlib.import_module(name)
    _, documented = _documented()
    public = _defined(module) | documented.get(name, set())
    assert sorted(public - set(module.__all__)) == []
