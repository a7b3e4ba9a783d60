"""The package's shape: no import cycle between its modules (lazy and type-only imports included), no private
name imported across modules, transformers and peft only behind the engine, nothing imports the CLI, and no
function longer than a screen and a half."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "headrank"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(prefix: str = "headrank") -> dict[str, set[tuple[str, str]]]:
    """module -> (imported module starting with `prefix`, name) for every import anywhere in it, lazy and
    type-checking ones included."""
    graph: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
                edges |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                edges |= {(alias.name, "") for alias in node.names if alias.name.startswith(prefix)}
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


def test_only_the_engine_and_the_baselines_import_transformers_or_peft():
    """The engine is the model side (baselines run other models); the rest asks HeadRanker or the engine."""
    found = [
        (module, target)
        for library in ("transformers", "peft")
        for module, edges in _imports(library).items()
        for target, _ in edges
        if target.split(".")[0] == library and not module.startswith(("headrank.engine", "headrank.baselines"))
    ]
    assert found == []


def test_nothing_imports_the_cli():
    """The CLI is a thin layer on the library: what it does is reachable without driving it."""
    assert [m for m, edges in _imports().items() for target, _ in edges if target == "headrank.cli"] == []


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []
