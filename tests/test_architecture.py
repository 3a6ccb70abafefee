"""The layering rules of ARCHITECTURE (D6, D15), checked on the code's own imports.

The graph is built from the source (``ast``), with every import that runs:
module level and inside functions, but not under ``if TYPE_CHECKING:``.
``from kiln import config`` is an import of the module ``kiln.config``;
``from kiln import app`` is an import of the package ``kiln``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Modules that build or serve apps: only they may import ``kiln.application``
#: or the ``kiln`` package itself. ``clay`` is the compatibility layer above kiln.
ENTRY_POINTS = frozenset(
    {
        "kiln",
        "kiln.__main__",
        "kiln._scaffold",
        "kiln.application",
        "kiln.cli",
        "kiln.gunicorn",
        "kiln.testing",
        "kiln.wsgi",
    }
)
#: The Flask-facing modules of ``kiln.resource``; the others are sans-IO (D6).
RESOURCE_WEB_MODULES = frozenset(
    {"kiln.resource.batch", "kiln.resource.dispatch", "kiln.resource.views"}
)
WEB_PACKAGES = ("flask", "werkzeug")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports at run time (any package, dotted names)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for statement in child.orelse:
                    visit_statement(statement)
            else:
                visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in MODULES else module)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def kiln_graph() -> dict[str, set[str]]:
    return {name: {m for m in imports_of(name) if m in MODULES} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    assert "kiln.exceptions" in imports_of("kiln._state")
    assert "kiln.config" not in imports_of("kiln._state")  # only under TYPE_CHECKING
    assert "kiln.config" in imports_of("kiln.stats")  # ``from kiln import config``


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_only_entry_points_import_the_application_or_the_package():
    offenders = {
        name: sorted(imports_of(name) & {"kiln", "kiln.application"})
        for name in MODULES
        if name.startswith("kiln") and name not in ENTRY_POINTS
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_state_registry_is_a_leaf():
    assert {m for m in imports_of("kiln._state") if m.startswith("kiln")} <= {"kiln.exceptions"}


def test_import_cycles_stay_inside_one_subpackage_and_span_two_modules_at_most():
    wide = [
        component
        for component in cycles(kiln_graph())
        if len(component) > 2 or len({_package_of(name) for name in component}) > 1
    ]
    assert wide == []


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in MODULES
        if (name == "kiln.resource" or name.startswith("kiln.resource."))
        and name not in RESOURCE_WEB_MODULES
    ),
)
def test_the_sans_io_resource_modules_do_not_import_flask(name):
    web = {m for m in imports_of(name) if m.split(".")[0] in WEB_PACKAGES}
    assert web == set()
