"""The layering of DEVELOPERS.md, checked on the import graph of our own modules.

Each layer is a folder, bottom up: contracts (``events``) -> runtime
(``pipeline.runtime``) -> the dev stack, the simulator, the agents (their pure
decision core inside) and the projections, side by side -> the entry points
(``pipeline.entry``). A module may import its own folder and the folders
:data:`MAY_IMPORT` names for it; nothing else, and no exemption.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("events", "pipeline", "agents", "projections", "simulator")
_BELOW_ENTRY = {"events", "pipeline.runtime", "pipeline.devstack", "simulator", "agents",
                "agents.core", "projections"}
#: folder -> the folders (besides itself) its modules may import
MAY_IMPORT: dict[str, set[str]] = {
    "pipeline": set(),  # the namespace's __init__: a docstring
    "events": set(),
    "pipeline.runtime": {"events"},
    "pipeline.devstack": {"events", "pipeline.runtime"},
    "simulator": {"events", "pipeline.runtime"},
    "agents.core": {"events"},
    "agents": {"events", "pipeline.runtime", "agents.core"},
    "projections": {"events", "pipeline.runtime"},
    "pipeline.entry": _BELOW_ENTRY,
}
#: folders whose modules import no framework (contracts and decisions are pure)
PURE = {"events", "agents.core"}
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


def folder_of(module: str) -> str | None:
    """The layer folder a module lives in: the longest folder name that prefixes it."""
    found = [f for f in MAY_IMPORT if module == f or module.startswith(f + ".")]
    return max(found, key=len) if found else None


def test_graph_is_not_empty() -> None:
    assert {"pipeline.runtime.settings", "projections.archive", "events.topics",
            "pipeline.entry.cli", "agents.core.allocation"} <= set(GRAPH)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_lives_in_a_layer_folder(module: str) -> None:
    assert folder_of(module) is not None, f"{module} is in no layer folder"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_only_to_own_folder_or_below(module: str) -> None:
    own = folder_of(module)
    assert own is not None
    allowed = MAY_IMPORT[own] | {own}
    bad = {name for name in _ours(GRAPH[module]) if folder_of(name) not in allowed}
    assert not bad, f"{module} ({own}) imports {bad}; it may import {sorted(allowed)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if folder_of(m) in PURE))
def test_contracts_and_decisions_import_no_framework(module: str) -> None:
    assert not {n for n in GRAPH[module] if n.split(".")[0] in FRAMEWORKS}, GRAPH[module]


def _reach(folder: str) -> set[str]:
    """Every folder ``folder`` may reach through its imports, itself excluded."""
    seen: set[str] = set()
    todo = list(MAY_IMPORT[folder])
    while todo:
        below = todo.pop()
        if below not in seen:
            seen.add(below)
            todo += MAY_IMPORT[below]
    return seen


def test_the_rule_is_a_hierarchy() -> None:
    """No folder reaches itself: the layers form no cycle."""
    assert [f for f in MAY_IMPORT if f in _reach(f)] == []


def test_the_entry_points_are_the_top() -> None:
    """Nothing below the entry points may reach them, and they reach every folder."""
    assert all("pipeline.entry" not in _reach(f) for f in MAY_IMPORT)
    assert _reach("pipeline.entry") == set(MAY_IMPORT) - {"pipeline", "pipeline.entry"}


def test_projections_and_agents_are_side_by_side() -> None:
    """A projection never imports an agent, nor an agent a projection."""
    assert "agents" not in _reach("projections")
    assert "projections" not in _reach("agents")


def test_records_are_plain_values() -> None:
    """Pure-core tests and checkers build a ``Record`` without importing a driver."""
    imported = GRAPH["pipeline.runtime.records"]
    assert not {n for n in imported if n.split(".")[0] in FRAMEWORKS}, imported
