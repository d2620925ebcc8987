"""An offline text corpus with distinct domains: the Python standard library's own files.

Every machine with Python has it, so the subject trains without downloads. Four domains, read from the
top-level modules of the running interpreter's standard library and its ``encodings`` package:

* ``code``: module source with docstrings and comments removed (:mod:`ast` docstring spans,
  :mod:`tokenize` comments);
* ``docstrings``: every module, class and function docstring (English prose);
* ``comments``: the text of every ``#`` comment;
* ``tables``: the ``encodings`` codec modules (character-map tables: escapes and hex numbers).

Files are split into train and test by a CRC of their name (one in five is held out), so test text
comes from modules the model never saw. Text is UTF-8 bytes (vocabulary 256).
"""

from __future__ import annotations

import ast
import functools
import io
import os
import tokenize
import zlib
from pathlib import Path

__all__ = ["DOMAINS", "domain_texts"]

DOMAINS = ("code", "docstrings", "comments", "tables")


def _strip(source: str) -> tuple[str, str, str]:
    """(code without docstrings and comments, docstrings, comments) of one module."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "", "", ""
    lines = source.splitlines()
    drop: set[int] = set()
    docs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            docs.append(first.value.value.strip())
            drop.update(range(first.lineno - 1, first.end_lineno or first.lineno))
    comments = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments.append(tok.string.lstrip("#").strip())
                row = tok.start[0] - 1
                if lines[row].strip().startswith("#"):
                    drop.add(row)
                else:
                    lines[row] = lines[row][: tok.start[1]].rstrip()
    except (tokenize.TokenError, IndentationError):
        return "", "", ""
    code = "\n".join(line for i, line in enumerate(lines) if i not in drop and line.strip())
    return code, "\n\n".join(docs), "\n".join(c for c in comments if c)


@functools.lru_cache(maxsize=1)
def domain_texts() -> dict[str, tuple[str, str]]:
    """``{domain: (train text, test text)}`` from this interpreter's standard library."""
    root = Path(os.__file__).parent
    parts: dict[str, tuple[list[str], list[str]]] = {d: ([], []) for d in DOMAINS}
    for f in sorted(root.glob("*.py")):
        split = 1 if zlib.crc32(f.name.encode()) % 5 == 0 else 0
        code, docs, comments = _strip(f.read_text(encoding="utf-8", errors="replace"))
        for d, text in (("code", code), ("docstrings", docs), ("comments", comments)):
            if text:
                parts[d][split].append(text)
    for f in sorted((root / "encodings").glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        if "decoding_table" in text:
            parts["tables"][1 if zlib.crc32(f.name.encode()) % 5 == 0 else 0].append(text)
    return {d: ("\n\n".join(tr), "\n\n".join(te)) for d, (tr, te) in parts.items()}
