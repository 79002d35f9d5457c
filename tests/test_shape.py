"""The shape the code keeps (issue 26): small classes and functions, the layers' directions, no import cycle.

Declarative Block Kit builders and the metrics registry are long by nature (one literal each) and are exempt."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"
MAX_CLASS, MAX_FUNCTION = 300, 60
EXEMPT = {
    ("slack/compose.py", "compose_view"),  # the compose form's Block Kit, one builder
    ("metrics.py", "__init__"),  # the registry: one declaration per metric
}
# What the pure core may not depend on: Slack, the database, D7, Prometheus.
OUTER = ("bot.slack", "bot.storage", "bot.d7", "bot.metrics")


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(BOT.rglob("*.py")):
        relative = path.relative_to(BOT).as_posix()
        if not relative.startswith("storage/migrations/"):
            yield relative, ast.parse(path.read_text(encoding="utf-8"))


def oversized() -> list[str]:
    found = []
    for relative, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
                if lines > limit and (relative, node.name) not in EXEMPT:
                    found.append(f"{relative}:{node.lineno} {node.name} ({lines} lines)")
    return found


def imports(tree: ast.Module, package: str) -> set[str]:
    """Every ``bot.…`` module this module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join([*package.split(".")[: 1 - node.level], node.module])
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("bot")}


def test_no_class_over_300_lines_and_no_function_over_60() -> None:
    assert oversized() == []


@pytest.mark.parametrize("layer", ["domain", "sending"])
def test_the_core_imports_nothing_of_slack_the_database_d7_or_the_metrics(layer: str) -> None:
    wrong = []
    for relative, tree in modules():
        if relative.startswith(f"{layer}/"):
            package = "bot." + relative.removesuffix(".py").replace("/", ".")
            wrong += [f"{relative} imports {name}" for name in imports(tree, package) if name.startswith(OUTER)]
    assert wrong == []


def test_no_import_cycle_between_modules() -> None:
    """Top-level imports only (an import inside a function runs late and cannot cycle at start-up)."""
    names = {relative.removesuffix(".py").replace("/", "."): tree for relative, tree in modules()}
    graph: dict[str, set[str]] = {}
    for name, tree in names.items():
        module = "bot." + name.removesuffix(".__init__")
        edges = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot"):
                edges |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.startswith("bot")}
        known = {"bot." + n.removesuffix(".__init__") for n in names}
        graph[module] = {e for e in edges if e in known and e != module}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            # A package importing its own submodules is how packages re-export; a submodule importing its
            # package back is the cycle.
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
