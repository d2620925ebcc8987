"""docs/architecture.md stays true (issue 24): it names every module, and every name it gives exists.

Both directions are checked from the files alone (no import, so the test takes well under a second):

- every Python module of the six packages (``<package>/**/*.py``, private ``_x`` modules included;
  a package's ``__init__.py`` is the package itself, e.g. ``quantum``) must appear in the document
  by its dotted name: ``llm_sim.positions`` anywhere in the text, a package as `` `quantum` ``;
- every dotted name the document gives that starts with a package name (``moe.checkpoint``,
  ``qhybrid.train.train``, ``quantum.GroverProblem.key``) must resolve: its longest prefix that is
  a module, then a top-level name of that module (a ``def``, ``class``, assignment, import or an
  ``__all__`` entry), then, when that is a class, a name defined in its body. Deeper parts are not
  checked;
- every repository path the document gives in backticks (``qhybrid/train.py``,
  ``benchmarks/check_fresh.py``) must exist; patterns (``<part>``, ``*``) are skipped.

A rename, a new module or a removed function therefore fails here until the document follows.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("qhybrid", "quantum", "llm_sim", "newton", "pqc_fl", "moe")

# A dotted name that starts with a package: not inside a path (``docs/moe.md``) or a longer word.
_DOTTED = re.compile(r"(?<![\w./-])(?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_]\w*)+")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+/?$")
_FILE_SUFFIXES = (".md", ".py", ".toml", ".txt", ".json")


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the packages (``__init__`` = the package)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a module or class body defines at its top level (inside ``if`` / ``try`` blocks too)."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out[name.id] = node
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                and isinstance(node.value, ast.List | ast.Tuple)
            ):
                for item in node.value.elts:
                    if isinstance(item, ast.Constant) and isinstance(item.value, str):
                        out.setdefault(item.value, node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, ast.If | ast.Try):
            blocks = [node.body, node.orelse]
            if isinstance(node, ast.Try):
                blocks += [node.finalbody, *(h.body for h in node.handlers)]
            for block in blocks:
                out.update(_names(block))
    return out


@functools.cache
def _top_level(module: str) -> dict[str, ast.AST]:
    return _names(ast.parse(module_files()[module].read_text(encoding="utf-8")).body)


def unresolved(dotted: str) -> str | None:
    """Why ``dotted`` names nothing in the code, or None when it resolves."""
    modules = module_files()
    parts = dotted.split(".")
    cut = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
    module, rest = ".".join(parts[:cut]), parts[cut:]
    if not rest:
        return None
    names = _top_level(module)
    if rest[0] not in names:
        return f"{dotted}: {module} has no module or top-level name {rest[0]!r}"
    node = names[rest[0]]
    if len(rest) > 1 and isinstance(node, ast.ClassDef) and rest[1] not in _names(node.body):
        return f"{dotted}: class {module}.{rest[0]} defines no {rest[1]!r}"
    return None


def doc_text() -> str:
    assert DOC.is_file(), f"{DOC.relative_to(ROOT)} is missing"
    return DOC.read_text(encoding="utf-8")


def test_every_module_is_in_the_document() -> None:
    text = doc_text()
    named = set(_DOTTED.findall(text))
    spans = set(_CODE_SPAN.findall(text))
    missing = [
        m
        for m in module_files()
        if ("." in m and m not in named) or ("." not in m and m not in spans)
    ]
    assert missing == [], (
        f"docs/architecture.md does not name these modules (add one line each): {missing}"
    )


def test_every_name_in_the_document_exists() -> None:
    bad = sorted(
        {why for name in _DOTTED.findall(doc_text()) if (why := unresolved(name)) is not None}
    )
    assert bad == [], f"docs/architecture.md names what the code does not have: {bad}"


def test_every_path_in_the_document_exists() -> None:
    missing = sorted(
        span
        for span in set(_CODE_SPAN.findall(doc_text()))
        if _PATH.match(span)
        and (span.endswith("/") or span.endswith(_FILE_SUFFIXES))
        and not (ROOT / span).exists()
    )
    assert missing == [], f"docs/architecture.md gives paths that do not exist: {missing}"


def test_the_checks_catch_what_they_should() -> None:
    # the resolver itself: a module, a function, a class member, and three misses
    assert unresolved("llm_sim.positions") is None
    assert unresolved("qhybrid.train.train") is None
    assert unresolved("quantum.GroverProblem.key") is None
    assert unresolved("llm_sim.position") is not None
    assert unresolved("qhybrid.train.no_such_function") is not None
    assert unresolved("quantum.problem.GroverProblem.no_such_member") is not None
    assert "docs/moe.md" not in _DOTTED.findall("see docs/moe.md and `moe.stats`")
