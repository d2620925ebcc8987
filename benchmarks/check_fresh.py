"""Which rows of docs/benchmarks.md rest on results made on the code that ships?

A row's numbers come from the JSON files it names (or, when it names none, the default output
``benchmarks/results/<name>.json`` of the ``benchmarks/bench_<name>.py`` script in its command; a
command cell "same" repeats the row above). Each JSON records in ``provenance`` the git commit it
was made on, whether the tree was dirty, and the code it depends on (``qhybrid.runs.write_results``);
older files without ``depends`` get the defaults of :data:`DEFAULT_DEPENDS` by name. A row is

- ``fresh``: every JSON was made with no uncommitted change to a file it depends on, and no such
  file changed between that commit and HEAD;
- ``stale``: a dependency changed since (the files are listed), or a file it depends on was
  uncommitted when it was made (``dirty_files``; any uncommitted file where a JSON records only
  ``dirty``), or the commit is unknown to this clone;
- ``untracked``: a JSON records no commit at all, or the file is missing.

Rows without a benchmark script (``make demo``, a test run) are listed as ``not checked``.

    python benchmarks/check_fresh.py            # table; exit 1 if a checked row is not fresh
    python benchmarks/check_fresh.py --write    # also rewrite the freshness section of the doc
    python benchmarks/check_fresh.py --part llm_sim   # only the rows of one section
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- freshness:begin -->", "<!-- freshness:end -->"

# Code a result depends on, by the prefix of its JSON name (files that record no ``depends``).
DEFAULT_DEPENDS = {
    "llm_": ("llm_sim", "quantum", "qhybrid/train.py"),
    "quantum_": ("quantum",),
    "newton_": ("newton", "qhybrid/train.py"),
    "pqc_fl_": ("pqc_fl",),
    "moe_": ("moe", "qhybrid/train.py"),
    "train_loop": ("qhybrid/train.py",),
}
_JSON = re.compile(r"\b([a-z0-9_]+\.json)\b")
_SCRIPT = re.compile(r"benchmarks/(bench_[a-z0-9_]+)\.py")


@dataclass
class Row:
    section: str
    claim: str
    jsons: list[str] = field(default_factory=list)
    status: str = "not checked"
    why: list[str] = field(default_factory=list)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def _provenance(data: dict) -> dict:
    """The provenance block, or the legacy ``git_revision`` of an ``environment`` block."""
    if isinstance(data.get("provenance"), dict):
        return data["provenance"]
    for block in (data, *(v for v in data.values() if isinstance(v, dict))):
        rev = block.get("git_revision")
        if isinstance(rev, str):
            dirty = {"dirty_files": block["dirty_files"]} if "dirty_files" in block else {}
            return {"commit": rev.removesuffix("-dirty"), "dirty": rev.endswith("-dirty")} | dirty
    return {}


def _depends(name: str, prov: dict) -> list[str]:
    deps = list(prov.get("depends") or ())
    if not deps:
        deps = next((list(v) for k, v in DEFAULT_DEPENDS.items() if name.startswith(k)), [])
    script = f"benchmarks/bench_{name.removesuffix('.json')}.py"
    return deps + ([script] if (ROOT / script).is_file() else [])


def _dirty(prov: dict, deps: list[str]) -> bool:
    """Was code the result depends on uncommitted? (Any dirt counts where files were not recorded.)"""
    files = prov.get("dirty_files")
    if not isinstance(files, list):
        return bool(prov.get("dirty"))
    return any(f == d or f.startswith(d.rstrip("/") + "/") for f in files for d in deps)


def check_json(name: str) -> tuple[str, list[str]]:
    """``(status, reasons)`` of one results file."""
    path = RESULTS / name
    if not path.is_file():
        return "untracked", [f"{name}: no such file in benchmarks/results/"]
    try:
        prov = _provenance(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as err:
        return "untracked", [f"{name}: not JSON ({err})"]
    commit = prov.get("commit")
    if not commit:
        return "untracked", [f"{name}: records no git commit"]
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
        return "stale", [f"{name}: commit {commit[:10]} is not in this repository"]
    deps = _depends(name, prov)
    reasons = [f"{name}: made on a dirty tree at {commit[:10]}"] if _dirty(prov, deps) else []
    changed = _git("diff", "--name-only", commit, "HEAD", "--", *deps).stdout.split()
    if changed:
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        reasons.append(f"{name}: {', '.join(changed[:4])}{more} changed since {commit[:10]}")
    return ("stale" if reasons else "fresh"), reasons


def rows(doc: str) -> list[Row]:
    """The table rows of the document, with the results files each rests on."""
    out: list[Row] = []
    section, previous = "", []
    for line in doc.split(BEGIN)[0].splitlines():
        if line.startswith("## "):
            section, previous = line[3:].split(" (")[0].strip(), []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= {"-", " "}:
            continue
        if cells[0] in ("claim", "target"):
            continue
        text = " ".join(cells[1:])
        jsons = list(dict.fromkeys(_JSON.findall(text)))
        if not jsons:
            scripts = _SCRIPT.findall(text)
            jsons = [f"{s.removeprefix('bench_')}.json" for s in dict.fromkeys(scripts)]
        if not jsons and cells[1].startswith("same"):
            jsons = previous
        previous = jsons or previous
        out.append(Row(section, cells[0][:70], jsons))
    return out


def check(doc_rows: list[Row]) -> list[Row]:
    order = {"fresh": 0, "stale": 1, "untracked": 2}
    for row in doc_rows:
        if not row.jsons:
            continue
        results = [check_json(j) for j in row.jsons]
        row.status = max((s for s, _ in results), key=order.__getitem__)
        row.why = [w for _, ws in results for w in ws]
    return doc_rows


def table(doc_rows: list[Row]) -> str:
    lines = ["| part | claim | results | status |", "|---|---|---|---|"]
    for r in doc_rows:
        status = r.status + (": " + "; ".join(r.why) if r.why else "")
        lines.append(f"| {r.section} | {r.claim} | {', '.join(r.jsons) or '–'} | {status} |")
    return "\n".join(lines)


def write_section(doc: str, body: str) -> str:
    head = doc.split(BEGIN)[0].rstrip() + "\n\n"
    tail = doc.split(END, 1)[1] if END in doc else "\n"
    intro = (
        "## Freshness of these rows\n\n"
        "Written by `python benchmarks/check_fresh.py --write` (`make bench-check` fails while a "
        "checked row is not fresh): whether each row's results JSON was made, with none of the code "
        "it depends on uncommitted, at a commit after which none of that code changed. Rows made on "
        "a lent GPU machine stay untracked until a device is lent again.\n\n"
    )
    return head + BEGIN + "\n" + intro + body + "\n" + END + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the doc's freshness section")
    ap.add_argument("--part", default="", help="only rows of sections starting with this")
    args = ap.parse_args()
    doc = DOC.read_text(encoding="utf-8")
    checked = check([r for r in rows(doc) if r.section.startswith(args.part)])
    body = table(checked)
    print(body)
    if args.write and not args.part:
        DOC.write_text(write_section(doc, body), encoding="utf-8")
    bad = [r for r in checked if r.status in ("stale", "untracked")]
    print(
        f"\n{len(checked) - len(bad)} of {len(checked)} rows fresh or not checked; {len(bad)} not"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
