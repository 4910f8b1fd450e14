"""The rooms of dicom_bq (infra, stack, clients, flows, security, filters, cli, and the shared
vocabulary every other imports) depend on each other one way only: no room imports a room that
imports it back, directly or through others, and the vocabulary imports no room at all."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "dicom_bq"
# Top-level modules every room may use: they import nothing of dicom_bq beyond each other.
LEAVES = {"errors", "texts", "files", "cron"}


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    """Every dicom_bq room `path` imports, at module level or inside a function."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dicom_bq" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@functools.cache
def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        room = _room(path)
        graph.setdefault(room, set()).update(_imported_rooms(path) - {room})
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        room, path = stack.pop()
        for target in sorted(graph.get(room, ())):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_room_imports_a_room_that_imports_it_back() -> None:
    graph = room_graph()
    cycles = [cycle for room in sorted(graph) if (cycle := _cycle_from(graph, room))]
    assert cycles == [], " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_vocabulary_imports_no_room() -> None:
    assert room_graph()["vocabulary"] <= LEAVES


def test_the_leaves_import_only_each_other() -> None:
    graph = room_graph()
    for leaf in LEAVES:
        assert graph.get(leaf, set()) <= LEAVES, leaf


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The rule above cannot pass vacuously: a graph with a cycle is found to have one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from(graph, "a") == ["a", "b", "c", "a"]
    assert _cycle_from(graph, "d") is None
