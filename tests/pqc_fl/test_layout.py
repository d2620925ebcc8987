"""The package's shape: the update's flow in its files, no import circle, every public name
documented, every function on one screen (issue 24)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pqc_fl"
MODULES = {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.glob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    """pqc_fl modules a module imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pqc_fl"):
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pqc_fl.")}
    return out


GRAPH = {name: _imports(tree) - {name} for name, tree in MODULES.items()}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_module_imports_itself_back() -> None:
    assert [m for m in GRAPH if _reaches(m, m)] == []


def test_the_update_flows_client_sign_wire_verify_aggregate() -> None:
    # what is signed depends on nothing else in the package; signing and verifying are apart
    assert GRAPH["envelope"] == set()
    assert "verify" not in GRAPH["sign"] and "sign" not in GRAPH["verify"]
    assert {"envelope", "wire"} <= GRAPH["sign"] and {
        "envelope",
        "wire",
        "policy",
        "keys",
    } <= GRAPH["verify"]
    assert "verify" in GRAPH["server"] and "server" in GRAPH["strategy"]
    assert not _reaches("policy", "verify")  # the old circle: policy -> envelope -> policy


def test_every_public_function_method_and_class_has_a_docstring() -> None:
    missing = []
    for name, tree in MODULES.items():

        def visit(node: ast.AST, prefix: str, module: str = name) -> None:
            for n in ast.iter_child_nodes(node):
                if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_"):
                    if ast.get_docstring(n) is None:
                        missing.append(f"{module}.{prefix}{n.name}")
                    if isinstance(n, ast.ClassDef):
                        visit(n, f"{prefix}{n.name}.")

        visit(tree, "")
    assert missing == []


def test_every_function_fits_on_one_screen() -> None:
    long = [
        f"{name}.{n.name}: {n.end_lineno - n.lineno + 1} lines"
        for name, tree in MODULES.items()
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.end_lineno and n.end_lineno - n.lineno >= 80
    ]
    assert long == []
