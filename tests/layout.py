"""What a part's files must show (issue 24): no import circle, every public name documented, every
function on one screen, and no submodule that shadows a public name of the package."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(package: str) -> dict[str, ast.Module]:
    """``{module stem: parsed source}`` of the package's modules."""
    return {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in (ROOT / package).glob("*.py")}


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``, at the top or inside functions."""
    graph = {}
    for name, tree in modules(package).items():
        out: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
                parts = node.module.split(".")
                out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}.")
                }
        graph[name] = out - {name}
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether ``start`` imports ``goal``, directly or through other modules."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def undocumented(package: str) -> list[str]:
    """Public functions, methods and classes without a docstring."""
    missing: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_"):
                if ast.get_docstring(n) is None:
                    missing.append(prefix + n.name)
                if isinstance(n, ast.ClassDef):
                    visit(n, f"{prefix}{n.name}.")

    for name, tree in modules(package).items():
        visit(tree, f"{package}.{name}.")
    return missing


def long_functions(package: str, limit: int = 80) -> list[str]:
    """Functions longer than ``limit`` lines (docstring included)."""
    return [
        f"{package}.{name}.{n.name}: {n.end_lineno - n.lineno + 1} lines"
        for name, tree in modules(package).items()
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.end_lineno and n.end_lineno - n.lineno >= limit
    ]


def shadowed(package: str) -> list[str]:
    """Public names of the package that, once every submodule is imported, resolve to a module
    (``from newton import sparsify`` giving the submodule ``newton.sparsify``)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
    return [name for name in pkg.__all__ if type(getattr(pkg, name)).__name__ == "module"]
