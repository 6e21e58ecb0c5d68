"""The layering of DEVELOPERS.md, checked on the import graph of our own modules.

events/ -> pipeline/ runtime -> agents/, projections/ -> entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("events", "pipeline", "agents", "projections", "simulator")
ENTRY_POINTS = {"pipeline.cli", "pipeline.worker", "pipeline.demo", "pipeline.ops_cli",
                "pipeline.ops_levers", "pipeline.simulate"}
FRAMEWORKS = ("faust", "aiokafka", "sqlalchemy", "asyncpg", "mode")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        _module_name(path): _imports(path)
        for pkg in PACKAGES
        for path in (REPO / pkg).rglob("*.py")
    }


GRAPH = _graph()


def _ours(imported: set[str]) -> set[str]:
    return {name for name in imported if name.split(".")[0] in PACKAGES}


def test_graph_is_not_empty() -> None:
    assert {"pipeline.settings", "projections.archive", "events.topics"} <= set(GRAPH)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("events")))
def test_events_import_nothing_of_ours_nor_frameworks(module: str) -> None:
    imported = GRAPH[module]
    assert all(name.startswith("events") for name in _ours(imported)), imported
    assert not {n for n in imported if n.split(".")[0] in FRAMEWORKS}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("pipeline")))
def test_runtime_does_not_import_agents_or_projections(module: str) -> None:
    if module in ENTRY_POINTS:
        return
    bad = {n for n in _ours(GRAPH[module]) if n.split(".")[0] in ("agents", "projections")}
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_nothing_imports_an_entry_point(module: str) -> None:
    if module == "pipeline.cli":
        return  # the CLI dispatches to the other entry points
    bad = {n for n in _ours(GRAPH[module]) if n in ENTRY_POINTS
           or any(n.startswith(e + ".") for e in ENTRY_POINTS)}
    assert not bad, f"{module} imports entry point(s) {bad}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("agents.core")))
def test_decision_core_is_pure(module: str) -> None:
    """Decisions import contracts only: no framework, no runtime, no agent adapter."""
    imported = GRAPH[module]
    assert not {n for n in imported if n.split(".")[0] in FRAMEWORKS}, imported
    assert all(n.startswith(("events", "agents.core")) for n in _ours(imported)), imported


def test_there_is_a_decision_core() -> None:
    assert "agents.core.allocation" in GRAPH
