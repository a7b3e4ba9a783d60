"""The package's shape: no import cycle between its modules (lazy imports included) and no private name
imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "headrank"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> (imported headrank module, name) for every import anywhere in it, type-checking ones aside."""
    graph: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("headrank"):
                edges |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                edges |= {(alias.name, "") for alias in node.names if alias.name.startswith("headrank")}
        graph[_module(path)] = edges
    return graph


def test_no_private_name_is_imported_across_modules():
    private = [(m, target, name) for m, edges in _imports().items() for target, name in edges if name.startswith("_")]
    assert private == []


def test_no_import_cycle():
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t, _ in edges if t != m and t in modules} for m, edges in _imports().items()}
    # a package's __init__ is where its submodules' imports pass through: only module-to-module edges count
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    seen: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for target in sorted(graph.get(node, ())):
            if seen.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in seen:
                visit(target, [*stack, target])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert cycles == []


def test_only_the_family_module_reaches_into_the_model():
    """`family.py` owns the model's layout; the rest of the package and the benchmarks ask it (or HeadRanker)."""
    allowed = {
        PACKAGE / "engine" / "family.py",
        PACKAGE / "engine" / "testing.py",
    }  # testing.py builds the tiny models themselves
    reaching = [
        str(path.relative_to(PACKAGE.parent))
        for folder in (PACKAGE, PACKAGE.parent / "benchmarks")
        for path in folder.rglob("*.py")
        if path not in allowed and any(s in path.read_text() for s in ("model.model", ".embed_tokens", ".layers["))
    ]
    assert reaching == []
