"""No module of ours imports itself back, directly or through others.

Counts every import, those under ``if TYPE_CHECKING:`` and inside functions included: a cycle
hidden there still means neither module can be understood (or moved) without the other. The
two the codebase had, ``api.context`` <-> ``api.intake`` (the lazily created group committer)
and ``credit.explain`` <-> ``credit.score`` (the waterfall plot), are named so a regression
reads plainly.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "client", "simulator", "credit", "federated", "traceability", "api", "cli")


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:  # Alembic scripts, loaded by path, not imported
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    # `from pkg import submodule` depends on the submodule, not on pkg itself.
                    targets.append(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_former_cycles_are_gone() -> None:
    graph = _graph()
    assert "api.intake" not in graph["api.context"]
    assert "credit.score" not in graph["credit.explain"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_checker_sees_a_cycle() -> None:
    # The checker itself, on a planted cycle: a -> b -> c -> a, and d alone.
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(planted) == [["a", "b", "c"]]
