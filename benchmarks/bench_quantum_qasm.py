"""OpenQASM 3 import and tokenization on Qiskit's own exports (issue 20).

1. Import sweep, n = 2..15: one problem per n (t = 1..3 random marked states, seed n, k* =
   floor(pi/4 sqrt(2^n/t))). Files: our four oracle styles as ``qasm3``, ``qasm3_loop`` and
   ``qasm3_oracle``, and Qiskit's ``grover_operator`` (``quantum.circuits.grover_operator_circuit``)
   with ``MCMTGate`` or ``mcx`` in modes noancilla / recursion / v-chain, inline and as a gate, all
   written by ``qiskit.qasm3.dumps``. Each file is imported (``quantum.import_grover``, timed); it
   must give the same (n, marked, k), and the closed form of what it gives must be within 1e-9 of
   Aer's statevector of the same file (``quantum.circuit_distribution``: Aer on the file's gates,
   independent of the importer's proof). Where Aer's work (gates x 2^qubits) at k* is over 5e9,
   the same file at k = 2 is imported too and compared with Aer (``aer_k``, work up to 6e10);
   v-chain at n = 15 (27 qubits, a 2 GiB state) gets no Aer reference. Oracle-only files are compared
   with Aer on the ``qasm3_loop`` rendering of the same problem (the same oracle construction).
2. Tampering, n = 3..``--tamper-max-n``: per base file (ours and Qiskit's), ``--tamper-per-file``
   random edits of the parsed circuit (remove, duplicate or swap an instruction, insert x / z / h /
   s / t / rz / cx / cz) and of the text (delete or duplicate a line inside a gate definition). Each
   is imported: refused, or accepted, and then a *silent mislabel* if its closed form differs from
   Aer's distribution of the tampered file by more than 1e-9. Target: 0 silent mislabels.
3. Tokenizer: ``--exports`` random Qiskit exports (``quantum.circuits.random_library_circuit``:
   grover_operator with every mcx mode, mcx in every mode and size, the MCX classes, MCMTGate over
   random gates, random standard-gate circuits). Target: 0 ``<unk>``; also counts identifiers
   the vocabulary lacks (read letter by letter) and checks ``count_tokens`` against the tokenizer.

    .venv/bin/python benchmarks/bench_quantum_qasm.py            # ~30-40 min on 2 busy cores

Resumable: finished cases are kept in ``<out>.partial.jsonl`` and skipped on a rerun. Writes
benchmarks/results/quantum_qasm.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from qhybrid.runs import atomic_write_json, environment_info
from quantum import GroverProblem, render, two_level
from quantum.circuits import (
    TAMPER_GATES,
    grover_operator_circuit,
    random_library_circuit,
    tamper_circuit,
)
from quantum.qasm_import import QasmImportError, QasmLimits, circuit_distribution, import_grover

STYLES = ("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal")
MODES = ("mcmt", "noancilla", "recursion", "v-chain")
LIMITS = QasmLimits(max_simulate_qubits=0)  # the importer's own Aer check off: Aer runs below
AER = QasmLimits(max_simulate_qubits=25, max_simulate_work=5e9)  # Aer reference: <= ~1 min
AER_K2 = QasmLimits(max_simulate_qubits=25, max_simulate_work=6e10)  # at k = 2: <= ~10 min


def problem(n: int, k: int | None = None) -> GroverProblem:
    rng = np.random.default_rng(n)
    t = int(rng.integers(1, min(3, 2**n // 2 - 1 if n > 1 else 1) + 1))
    marked = [format(int(i), f"0{n}b") for i in rng.choice(2**n, t, replace=False)]
    return GroverProblem(n, marked, k)


Build = Callable[[int | None], tuple[str, str, GroverProblem, dict[str, int]]]


def sweep_files(n: int) -> list[tuple[str, Build]]:
    """(case id, build) with build(k) -> (file text, Aer reference text, problem, import options:
    an oracle-only file carries no k, so it is passed with ``iterations`` when not k*)."""
    out: list[tuple[str, Build]] = []
    marked = problem(n).marked
    for style in STYLES:
        for fmt in ("qasm3", "qasm3_loop", "qasm3_oracle"):

            def build(k: int | None, style: str = style, fmt: str = fmt) -> Any:
                p = GroverProblem(n, marked, k, style)
                text = render(p, fmt)
                if fmt != "qasm3_oracle":
                    return text, text, p, {}
                options = {"flag_qubits": int(style == "mcp_flag"), "iterations": k}
                return text, render(p, "qasm3_loop"), p, options

            out.append((f"n{n}/ours/{style}/{fmt}", build))
    for mode in MODES:
        for as_gate in (False, True):

            def build_q(k: int | None, mode: str = mode, as_gate: bool = as_gate) -> Any:
                from qiskit import qasm3

                p = GroverProblem(n, marked, k)
                text = qasm3.dumps(grover_operator_circuit(p, mode, as_gate))
                return text, text, p, {}

            out.append((f"n{n}/qiskit/{mode}/{'gate' if as_gate else 'inline'}", build_q))
    return out


def import_one(text: str, p: GroverProblem, options: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        found = import_grover(text, limits=LIMITS, **options)
    except QasmImportError as err:
        return {"right_problem": False, "error": str(err)}
    got = found.problem
    return {
        "right_problem": (got.n_qubits, got.marked, got.iterations)
        == (p.n_qubits, p.marked, p.iterations),
        "import_s": round(time.perf_counter() - t0, 3),
        "qubits": found.num_qubits,
        "verified": list(found.verified),
        "problem": got,
    }


def run_import_case(build: Build) -> dict[str, Any]:
    """Import the file at k*; compare with Aer at k*, or at k = 2 where Aer's work is too large."""
    text, ref, p, options = build(None)
    out = {"k": p.iterations, "t": p.n_marked, "bytes": len(text), **import_one(text, p, options)}
    found, aer_k, aer = out.pop("problem", None), p.iterations, None
    t1 = time.perf_counter()
    try:
        aer = circuit_distribution(ref, AER)
    except QasmImportError:  # too much for Aer here at k*: the same file at k = 2
        aer_k = 2
        text, ref, p, options = build(2)
        row = import_one(text, p, options)
        found, out["k2_right_problem"] = row.pop("problem", None), row["right_problem"]
        t1 = time.perf_counter()
        try:
            aer = circuit_distribution(ref, AER_K2)
        except QasmImportError as err:
            out["aer"] = f"skipped: {err}"
    if aer is not None and found is not None:
        out["max_abs_diff_vs_aer"] = float(np.max(np.abs(two_level(found).dense() - aer)))
        out["aer_s"] = round(time.perf_counter() - t1, 3)
    out["aer_k"] = aer_k
    right = out["right_problem"] and out.get("k2_right_problem", True)
    out["ok"] = bool(right and out.get("max_abs_diff_vs_aer", 0.0) <= 1e-9)
    return out


def tampered_texts(text: str, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` random edits of ``text``: of the parsed circuit, or of a gate definition's lines."""
    from qiskit import qasm3

    rng = np.random.default_rng(seed)
    qc = qasm3.loads(text)
    body = [i for i, line in enumerate(text.splitlines()) if line.startswith("  ")]
    out: list[tuple[str, str]] = []
    while len(out) < count:
        how = ("remove", "duplicate", "swap", "insert", "def_delete", "def_duplicate")[
            rng.integers(6)
        ]
        if how.startswith("def_"):
            if not body:
                continue
            lines = text.splitlines(keepends=True)
            i = int(body[rng.integers(len(body))])
            lines[i : i + 1] = [] if how == "def_delete" else [lines[i], lines[i]]
            out.append((how, "".join(lines)))
            continue
        gate = TAMPER_GATES[rng.integers(len(TAMPER_GATES))]
        where, qubit = int(rng.integers(len(qc.data))), int(rng.integers(qc.num_qubits))
        new = tamper_circuit(qc, how, where, gate, qubit)
        out.append((how, qasm3.dumps(new)))
    return out


def run_tamper_case(text: str, count: int, seed: int) -> dict[str, Any]:
    tally: Counter[str] = Counter()
    mislabels = []
    for how, edited in tampered_texts(text, count, seed):
        try:
            found = import_grover(edited, limits=LIMITS)
        except QasmImportError as err:
            kind = (
                "invalid_qasm"
                if "malformed" in str(err) or "cannot build" in str(err)
                else "refused"
            )
            tally[kind] += 1
            continue
        truth = circuit_distribution(edited, AER)
        diff = float(np.max(np.abs(two_level(found.problem).dense() - truth)))
        if diff > 1e-9:
            tally["silent_mislabel"] += 1
            mislabels.append({"edit": how, "problem": found.problem.to_dict(), "diff": diff})
        else:
            tally["imported_as_computed"] += 1
    return {"tally": dict(tally), "mislabels": mislabels}


def run_tokenizer(count: int) -> dict[str, Any]:
    from qiskit import qasm3

    from quantum.tokenizer import VOCAB, build_tokenizer, count_tokens

    tok, vocab = build_tokenizer(), set(VOCAB)
    unk = tokens = chars = mismatches = failed = 0
    unseen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    t0 = time.perf_counter()
    for seed in range(count):
        try:
            text = qasm3.dumps(random_library_circuit(seed))
        except Exception as err:  # the exporter's own limits
            failed += 1
            kinds[f"export failed: {type(err).__name__}"] += 1
            continue
        ids = tok(text, add_special_tokens=False)["input_ids"]
        unk += ids.count(tok.unk_token_id)
        tokens, chars = tokens + len(ids), chars + len(text)
        mismatches += count_tokens(text) != len(ids)
        unseen.update(w for w in re.findall(r"[A-Za-z_]+", text) if w not in vocab and len(w) > 1)
        kinds.update({re.sub(r"_\d+$", "", g) for g in re.findall(r"^gate (\w+)", text, re.M)})
    return {
        "exports": count - failed, "export_failures": failed, "unk_tokens": unk, "tokens": tokens,
        "chars": chars, "count_tokens_mismatches": mismatches, "seconds": round(time.perf_counter() - t0, 1),
        "identifiers_read_letter_by_letter": dict(unseen.most_common(20)),
        "exports_defining_gate": dict(kinds.most_common()),
    }  # fmt: skip


class Heartbeat:
    """A line every 15 s while a long case runs (the rules: long work talks)."""

    def __init__(self) -> None:
        self.label, self.start = "", time.time()
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while True:
            time.sleep(15)
            print(f"  ... {self.label} ({time.time() - self.start:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=list(range(2, 16)))
    ap.add_argument("--tamper-max-n", type=int, default=7)
    ap.add_argument("--tamper-per-file", type=int, default=30)
    ap.add_argument("--exports", type=int, default=1200)
    ap.add_argument("--out", default="benchmarks/results/quantum_qasm.json")
    args = ap.parse_args()
    partial = Path(args.out + ".partial.jsonl")
    done = {}
    if partial.exists():
        done = {r["case"]: r for r in map(json.loads, partial.read_text().splitlines()) if r}
    env = environment_info()  # the commit that runs (a later commit must not be named)
    beat = Heartbeat()

    def record(case: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if case not in done:
            beat.label, beat.start = case, time.time()
            done[case] = {"case": case, **work()}
            with open(partial, "a", encoding="utf-8") as f:
                f.write(json.dumps(done[case]) + "\n")
            print(
                f"{case}: {json.dumps({k: v for k, v in done[case].items() if k != 'case'})[:240]}",
                flush=True,
            )
        return done[case]

    sweep = [
        record(case, lambda b=build: run_import_case(b))
        for n in args.n
        for case, build in sweep_files(n)
    ]
    tamper = []
    for n in range(3, args.tamper_max_n + 1):
        for case, build in sweep_files(n):
            if case.endswith(
                (
                    "x_mcz_x/qasm3",
                    "mcp_flag/qasm3",
                    "phase_oracle/qasm3_loop",
                    "mcmt/gate",
                    "noancilla/inline",
                    "v-chain/inline",
                )
            ):
                text = build(None)[0]
                tamper.append(
                    record(
                        "tamper/" + case,
                        lambda t=text, s=n: run_tamper_case(t, args.tamper_per_file, s),
                    )
                )
    tokenizer = record(f"tokenizer/{args.exports}", lambda: run_tokenizer(args.exports))
    tally: Counter[str] = Counter()
    for t in tamper:
        tally.update(t["tally"])
    failures = [r for r in sweep if not r["ok"]]
    summary = {
        "sweep_files": len(sweep), "sweep_failures": len(failures),
        "sweep_worst_abs_diff_vs_aer": max((r.get("max_abs_diff_vs_aer", 0.0) for r in sweep), default=None),
        "sweep_slowest_import_s": max((r.get("import_s", 0.0) for r in sweep), default=None),
        "tampered": sum(tally.values()), "tamper_outcomes": dict(tally),
        "silent_mislabels": tally["silent_mislabel"], "tokenizer_unk": tokenizer["unk_tokens"],
        "tokenizer_exports": tokenizer["exports"],
    }  # fmt: skip
    result = {
        "benchmark": "quantum_qasm", "env": env, "args": vars(args),
        "summary": summary, "sweep": sweep, "tamper": tamper, "tokenizer": tokenizer,
    }  # fmt: skip
    atomic_write_json(Path(args.out), result)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
