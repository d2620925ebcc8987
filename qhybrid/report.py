"""Markdown reports: sections with text, tables and PNG figures, written atomically to ``report.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qhybrid.runs import Run, atomic_write_text

__all__ = ["Section", "markdown_table", "render_report", "tidy_table", "write_report"]


@dataclass
class Section:
    """One part of a report (a reproduce stage, or a whole single-part run)."""

    title: str
    text: str = ""  # Markdown paragraphs shown under the title
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (caption, rows)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path in the run)
    status: Literal["ok", "failed", "skipped", "interrupted"] = "ok"
    error: str | None = None  # the failure message when status == "failed"
    seconds: float | None = None  # wall time of the stage
    headline: str = ""  # the key result in one line, printed when a reproduce stage ends

    def add_table(self, caption: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.tables.append((caption, [dict(r) for r in rows]))

    def add_figure(self, caption: str, path: Path) -> None:
        self.figures.append((caption, path))


def _fmt(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, floatfmt)
    if value is None:
        return "–"
    return str(value).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g"
) -> str:
    """Rows of dicts as a GitHub Markdown table; columns default to the union of keys in order."""
    if not rows:
        return "_(no rows)_\n"
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        columns = list(seen)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), floatfmt) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def tidy_table(
    caption: str, rows: Sequence[Mapping[str, Any]], *, min_run: int = 3
) -> tuple[str, list[dict[str, Any]]]:
    """A table as a reader wants it: constant columns moved into the caption, and runs of
    ``min_run`` or more consecutive rows that agree on every column but the first collapsed into
    one row whose first cell reads ``first–last``.

    Tables of one or two rows are left alone (a constant column is then the content).
    """
    table = [dict(r) for r in rows]
    if len(table) < 3:
        return caption, table
    columns = list(dict.fromkeys(k for r in table for k in r))
    constant = [c for c in columns[1:] if len({repr(r.get(c)) for r in table}) == 1]
    if constant:
        shown = "; ".join(f"{c} {_fmt(table[0].get(c), '.4g')}" for c in constant)
        caption = f"{caption} (every row: {shown})"
        table = [{k: v for k, v in r.items() if k not in constant} for r in table]
    first = columns[0]
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(table):
        j = i + 1
        rest = {k: repr(v) for k, v in table[i].items() if k != first}
        while j < len(table) and {k: repr(v) for k, v in table[j].items() if k != first} == rest:
            j += 1
        if j - i >= min_run:
            out.append({**table[i], first: f"{table[i].get(first)}–{table[j - 1].get(first)}"})
        else:
            out.extend(table[i:j])
        i = j
    return caption, out


def render_report(title: str, sections: Sequence[Section], *, run: Run, preamble: str = "") -> str:
    """The Markdown text of a report whose figure links are relative to the run folder."""
    out = [f"# {title}\n"]
    if preamble:
        out.append(preamble.rstrip() + "\n")
    if len(sections) > 1:
        out.append("| stage | status | time (s) |\n|---|---|---|")
        for s in sections:
            secs = f"{s.seconds:.1f}" if s.seconds is not None else "–"
            out.append(f"| {s.title} | {s.status} | {secs} |")
        out.append("")
    for s in sections:
        out.append(f"## {s.title}\n")
        if s.status == "failed":
            out.append(f"**This stage failed:** `{s.error}`\n")
        elif s.status == "interrupted":
            out.append("**Interrupted** (Ctrl-C or a kill) before this stage finished.\n")
        elif s.status == "skipped":
            out.append(f"_Skipped: {s.error or 'not run'}._\n")
        if s.text:
            out.append(s.text.rstrip() + "\n")
        for caption, rows in s.tables:
            caption, rows = tidy_table(caption, rows)
            out.append(f"**{caption}**\n")
            out.append(markdown_table(rows))
        for caption, path in s.figures:
            rel = Path(path).resolve().relative_to(run.path.resolve())
            out.append(f"![{caption}]({rel.as_posix()})\n\n_{caption}_\n")
    return "\n".join(out)


def write_report(run: Run, title: str, sections: Sequence[Section], *, preamble: str = "") -> Path:
    """Write ``report.md`` in the run folder atomically and return its path."""
    path = run.path / "report.md"
    atomic_write_text(path, render_report(title, sections, run=run, preamble=preamble))
    return path
