"""quantum: Grover search problems, exact and Aer simulation, text renderings, tokenizer, datasets.

Public API (names fixed by DESIGN.md)::

    from quantum import GroverProblem, exact_distribution, simulate, build_circuit, render
    p = GroverProblem(5, ["01101", "10010"])          # k = floor(pi/4 sqrt(32/2)) = 3
    probs = exact_distribution(p)                      # float64[32], index int(bitstring, 2)
    counts = simulate(p, backend="aer", shots=1000, seed=1)
    text = render(p, "compact")
    found = import_grover(open("grover.qasm").read())  # the Grover problem a QASM file computes

Bit order everywhere: bitstrings are written as Qiskit prints counts, qubit 0 is the rightmost
character; ``probs[int(s, 2)]`` is the probability of outcome ``s``.

Compact format (``render(p, "compact")``): space-separated tokens, one per word, digit and bit::

    qubits 5 h repeat 3 oracle x_mcz_x flip 0 1 1 0 1 flip 1 0 0 1 0 diffuse end measure

= n qubits (decimal digits), H on all, repeat k (decimal digits) times {oracle of the named style
flipping the phase of each listed state, diffuser}, measure. O(n t) tokens, independent of k.
Answer format (``render(p, "answer")``), the exact two-level closed form of the distribution::

    marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked 4 . 8 0 6 6 e - 0 1 p_rest 1 . 2 8 9 4 e - 0 3

= each listed state has probability p_marked, each of the other 2**n - t states p_rest
(``"%.4e"`` of the float, one token per character).

Dataset record schema (``generate_dataset``: one JSON object per line, sorted keys; the same
columns in Parquet; one record per problem x rendering; full list in
``quantum.dataset.RECORD_FIELDS`` and docs/quantum.md)::

    record_id, problem_id (= GroverProblem.key), split, index,
    n_qubits, marked (sorted bitstrings), n_marked, iterations, optimal_iterations,
    iteration_rule, oracle_style,
    rendering, text (the model input), n_chars, n_tokens,
    target (the "answer" rendering), target_n_tokens,
    p_marked_each, p_rest_each, success_probability (exact float64),
    probs (dense exact distribution for n <= 6, else null),
    aer_max_abs_diff (Aer statevector cross-check, else null), probs_noisy (Aer + noise, or null),
    seed, generator

Splits: train, test_id (unseen marked sets), test_ood_n (more qubits), test_ood_t (more marked
states), test_ood_k (non-optimal k), disjoint on the marked set and hence on problem_id.
"""

from __future__ import annotations

from typing import Any

from quantum.problem import GroverProblem, GroverProblemError, optimal_iterations
from quantum.render import FORMATS, render
from quantum.simulate import TwoLevelDistribution, exact_distribution, simulate, two_level

__all__ = [
    "FORMATS",
    "DatasetInfo",
    "DatasetSpec",
    "GroverImport",
    "GroverProblem",
    "GroverProblemError",
    "QasmImportError",
    "QasmLimits",
    "TwoLevelDistribution",
    "build_circuit",
    "build_tokenizer",
    "circuit_distribution",
    "exact_distribution",
    "generate_dataset",
    "import_grover",
    "import_grover_file",
    "optimal_iterations",
    "render",
    "simulate",
    "two_level",
]


_QASM_IMPORT = (
    "GroverImport",
    "QasmImportError",
    "QasmLimits",
    "circuit_distribution",
    "import_grover",
    "import_grover_file",
)


def __getattr__(name: str) -> Any:
    # Qiskit, transformers and datasets load only when these are first used.
    if name == "build_circuit":
        from quantum.circuits import build_circuit

        return build_circuit
    if name == "build_tokenizer":
        from quantum.tokenizer import build_tokenizer

        return build_tokenizer
    if name in _QASM_IMPORT:
        from quantum import qasm_import

        return getattr(qasm_import, name)
    if name in ("generate_dataset", "DatasetSpec", "DatasetInfo"):
        from quantum import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'quantum' has no attribute {name!r}")
