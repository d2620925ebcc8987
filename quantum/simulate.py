"""Exact and sampled output distributions of Grover problems, from three backends.

Closed form (Boyer, Brassard, Hoyer, Tapp, arXiv quant-ph/9605034). With N = 2**n, t marked
states and theta = asin(sqrt(t/N)), after k Grover iterations from the uniform state every marked
state has amplitude sin((2k+1) theta) / sqrt(t) and every unmarked state cos((2k+1) theta) /
sqrt(N - t). The whole distribution is therefore *two-level*: two numbers plus the marked set,
exact for any n up to 60 (:class:`TwoLevelDistribution`); a dense array is built only on request.

Backends of :func:`simulate`:

- ``"analytic"``: the closed form, O(t) work plus O(N) to write a dense array.
- ``"statevector"``: the toolkit's own simulator of the circuit's gate sequence. It keeps the real
  float64 state vector (a Grover circuit from |0..0> never leaves the reals) and applies each
  Oracle as the diagonal sign flip it is (O(t)) and each Diffuser as the rank-one reflection
  2|s><s| - I it is (one fused O(N) pass, psi <- 2 mean(psi) - psi), instead of O(n) dense gates
  per iteration. numpy on ``device="cpu"``, torch on ``device="cuda"``.
- ``"aer"``: Qiskit Aer on :func:`~quantum.circuits.build_circuit` (statevector; shots with a
  seed; an optional noise model, in which case probabilities come from the density matrix).
- ``"auto"``: ``"analytic"``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantum.problem import GroverProblem, GroverProblemError

if TYPE_CHECKING:
    from qiskit_aer.noise import NoiseModel

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "MAX_AER_QUBITS",
    "MAX_DENSE_QUBITS",
    "TwoLevelDistribution",
    "available_memory",
    "check_resources",
    "depolarizing_noise",
    "exact_distribution",
    "simulate",
    "statevector",
    "two_level",
]

BACKENDS = ("auto", "analytic", "statevector", "aer")
MAX_DENSE_QUBITS = 30  # a dense float64 distribution of 2**30 entries is 8 GiB
MAX_AER_QUBITS = 28  # Aer's complex128 state of 2**28 entries is 4 GiB (one more for mcp_flag)
MAX_STATEVECTOR_QUBITS = {"cpu": 30, "cuda": 33}  # float64 state: 8 GiB on CPU, 64 GiB on GPU
MAX_NOISY_QUBITS = 12  # density matrices are 4**n entries
# Amplitude updates (k · 2^n) one exact simulation may spend: about a minute of one CPU core, or of
# a GPU; beyond, the closed form gives the same numbers at once.
MAX_WORK = {"cpu": 5e10, "cuda": 5e12}
MAX_CIRCUIT_ITERATIONS = 20_000  # Grover iterations of a circuit Qiskit builds gate by gate


def available_memory(device: str = "cpu") -> int:
    """Bytes the process can still allocate: ``MemAvailable`` on Linux, free memory on a GPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_resources(problem: GroverProblem, backend: str, device: str = "cpu") -> None:
    """Refuse, before anything is spent, a simulation whose work or memory the machine lacks.

    Work is k · 2^n amplitude updates (statevector and Aer), capped by :data:`MAX_WORK`; Aer and
    the unrolled renderings also cap k at :data:`MAX_CIRCUIT_ITERATIONS` (Qiskit builds every gate).
    Memory is the dense arrays a backend holds at once (statevector: state and probabilities,
    float64; Aer: a complex128 state and its probabilities; analytic: the dense distribution)
    against :func:`available_memory`. The closed form (``two_level``) needs neither.
    """
    n, k = problem.n_qubits, problem.iterations
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if backend in ("statevector", "aer") and k * 2.0**n > MAX_WORK[kind]:
        raise GroverProblemError(
            f"k·2^n = {k}·2^{n} = {k * 2.0**n:.2g} amplitude updates exceed this backend's budget "
            f"({MAX_WORK[kind]:.0g} on {kind}); use backend='analytic' (the exact closed form)"
            + (" or device='cuda'" if kind == "cpu" and backend == "statevector" else "")
        )
    if backend == "aer" and k > MAX_CIRCUIT_ITERATIONS:
        raise GroverProblemError(
            f"iterations={k} > {MAX_CIRCUIT_ITERATIONS}: Qiskit would build every gate of the "
            "circuit; use backend='statevector' or 'analytic'"
        )
    per_entry = {"statevector": 16, "aer": 24}.get(backend, 8)
    need, have = per_entry * 2**n, available_memory(device if backend == "statevector" else "cpu")
    if need > have:
        raise GroverProblemError(
            f"backend={backend!r} at n_qubits={n} needs about {need / 2**30:.1f} GiB; "
            f"{have / 2**30:.1f} GiB are available. Use two_level(problem) (exact, any n <= 60)"
            + (", or a GPU" if backend == "statevector" and kind == "cpu" else "")
        )


@dataclass(frozen=True)
class TwoLevelDistribution:
    """The exact output distribution of a standard Grover circuit, in closed form.

    Attributes:
        n_qubits: n.
        marked: sorted marked bitstrings (qubit 0 rightmost).
        iterations: k.
        amp_marked: amplitude of each marked state, sin((2k+1) theta) / sqrt(t) (global phase dropped).
        amp_rest: amplitude of each unmarked state, cos((2k+1) theta) / sqrt(N - t).
    """

    n_qubits: int
    marked: tuple[str, ...]
    iterations: int
    amp_marked: float
    amp_rest: float

    @property
    def p_marked_each(self) -> float:
        """Probability of each marked state."""
        return self.amp_marked**2

    @property
    def p_rest_each(self) -> float:
        """Probability of each unmarked state."""
        return self.amp_rest**2

    @property
    def success_probability(self) -> float:
        """Probability of measuring any marked state, sin^2((2k+1) theta)."""
        return len(self.marked) * self.p_marked_each

    def probability(self, bitstring: str) -> float:
        """Probability of one outcome, written as Qiskit prints counts."""
        return self.p_marked_each if bitstring in self.marked else self.p_rest_each

    def dense(self) -> np.ndarray:
        """float64 array of length 2**n, index int(bitstring, 2) (n <= MAX_DENSE_QUBITS)."""
        _check_dense(self.n_qubits)
        out = np.full(2**self.n_qubits, self.p_rest_each, dtype=np.float64)
        out[[int(s, 2) for s in self.marked]] = self.p_marked_each
        return out

    def sample(self, shots: int, seed: int | None = None) -> dict[str, int]:
        """Draw ``shots`` outcomes without building the dense array (works for any n <= 60)."""
        rng = np.random.default_rng(seed)
        t, n = len(self.marked), self.n_qubits
        probs = np.array([self.p_marked_each] * t + [max(0.0, 1.0 - self.success_probability)])
        hits = rng.multinomial(shots, probs / probs.sum())
        counts = {s: int(h) for s, h in zip(self.marked, hits[:t], strict=True) if h}
        marked_idx = {int(s, 2) for s in self.marked}
        rest: list[int] = []
        while len(rest) < hits[t]:  # uniform over unmarked states: rejection, t < N so it ends
            draw = rng.integers(0, 2**n, size=int(hits[t]) - len(rest), dtype=np.int64)
            rest.extend(int(i) for i in draw if int(i) not in marked_idx)
        for i in rest:
            key = format(i, f"0{n}b")
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_qubits": self.n_qubits,
            "marked": list(self.marked),
            "iterations": self.iterations,
            "p_marked_each": self.p_marked_each,
            "p_rest_each": self.p_rest_each,
            "success_probability": self.success_probability,
        }


def _check_dense(n: int) -> None:
    if n > MAX_DENSE_QUBITS:
        raise GroverProblemError(
            f"a dense distribution for n_qubits={n} has 2**{n} entries (> 2**{MAX_DENSE_QUBITS}); "
            "use two_level(problem), which is exact for any n up to 60"
        )


def two_level(problem: GroverProblem) -> TwoLevelDistribution:
    """The closed-form distribution of ``problem`` (exact for any n <= 60)."""
    n, t, k = problem.n_qubits, problem.n_marked, problem.iterations
    big_n = 2.0**n
    theta = math.asin(math.sqrt(t / big_n))
    angle = (2 * k + 1) * theta
    sin, cos = math.sin(angle), math.cos(angle)
    # sin/cos of a float angle carry ~eps*angle absolute error: below that the exact value is 0
    # (e.g. n=3, t=2, k=1 lands exactly on pi/2), so do not report rounding noise as probability.
    tiny = 4 * 2.0**-52 * max(1.0, angle)
    return TwoLevelDistribution(
        n_qubits=n,
        marked=problem.marked,
        iterations=k,
        amp_marked=0.0 if abs(sin) < tiny else sin / math.sqrt(t),
        amp_rest=0.0 if abs(cos) < tiny else cos / math.sqrt(big_n - t),
    )


def exact_distribution(problem: GroverProblem) -> np.ndarray:
    """Exact output probabilities: float64, length 2**n, index int(bitstring, 2).

    Closed form (see module docstring); dense only up to n = 30, use :func:`two_level` beyond.
    """
    return two_level(problem).dense()


def statevector(problem: GroverProblem, device: str = "cpu") -> Any:
    """Final state of the search register from the toolkit's own structured simulator.

    Applies the circuit's gates one iteration at a time: H^n|0> is the uniform vector, each
    Oracle flips the sign of the marked amplitudes, each Diffuser maps psi -> 2 mean(psi) - psi
    (= (2|s><s| - I) psi). Returns a real float64 numpy array on ``"cpu"`` or a torch tensor on a
    CUDA device (``"cuda"``, ``"cuda:1"``); amplitudes equal Qiskit's up to a global sign.
    """
    kind = "cuda" if device.startswith("cuda") else device
    if kind not in MAX_STATEVECTOR_QUBITS:
        raise GroverProblemError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    n = problem.n_qubits
    if n > MAX_STATEVECTOR_QUBITS[kind]:
        raise GroverProblemError(
            f"n_qubits={n} is too large for the statevector backend on {kind} "
            f"(max {MAX_STATEVECTOR_QUBITS[kind]}); use backend='analytic'"
        )
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise GroverProblemError(
                f"device={device!r} but this torch has no CUDA device; use device='cpu'"
            )
    check_resources(problem, "statevector", device)
    if kind == "cuda":
        return _statevector_torch(problem, device)
    size = 2**n
    idx = np.array(problem.marked_indices, dtype=np.int64)
    psi = np.full(size, 1.0 / math.sqrt(size))
    total = float(psi.sum())
    for step in range(problem.iterations):
        # Oracle: sign flip of the marked amplitudes; keep the running sum of psi exact.
        marked = psi[idx]
        psi[idx] = -marked
        total -= 2.0 * float(marked.sum())
        # Diffuser: psi <- 2 mean(psi) - psi; its sum stays 2 total - total = total.
        np.subtract(2.0 * total / size, psi, out=psi)
        if step % 64 == 63:  # re-sum now and then so rounding in `total` cannot drift
            total = float(psi.sum())
    return psi


def _statevector_torch(problem: GroverProblem, device: str) -> Any:
    """The same simulation with torch on ``device`` (any torch device; the tests run it on CPU)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GroverProblemError(
            f"device={device!r} needs CUDA, which torch {torch.__version__} does not see; "
            "use device='cpu'"
        )
    n = problem.n_qubits
    size = 2**n
    idx = torch.tensor(problem.marked_indices, dtype=torch.int64, device=device)
    psi = torch.full((size,), 1.0 / math.sqrt(size), dtype=torch.float64, device=device)
    total = psi.sum()  # a 0-d tensor on the device: no host sync inside the loop
    for step in range(problem.iterations):
        marked = psi[idx]
        psi[idx] = -marked
        total = total - 2.0 * marked.sum()
        torch.sub(2.0 * total / size, psi, out=psi)  # one fused pass: psi <- 2 mean - psi
        if step % 64 == 63:
            total = psi.sum()
    return psi


def depolarizing_noise(p1: float, p2: float | None = None) -> NoiseModel:
    """An Aer noise model: depolarizing error ``p1`` on 1-qubit and ``p2`` (default 10 p1) on
    2-qubit gates of the basis {u, cx}; a simple, standard choice for noisy dataset targets."""
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    p2 = 10 * p1 if p2 is None else p2
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0.0 <= p <= 1.0:
            raise GroverProblemError(f"{name}={p} is not a probability in [0, 1]")
    model = NoiseModel(basis_gates=["u", "cx"])
    model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), ["u"])
    model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), ["cx"])
    return model


@functools.lru_cache(maxsize=1)
def _aer_pass_manager() -> Any:
    """Building a pass manager for Aer's target takes ~0.3 s; build it once per process."""
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    return generate_preset_pass_manager(optimization_level=0, backend=AerSimulator())


def aer_transpile(circuit: Any, noise: NoiseModel | None = None) -> Any:
    """Transpile ``circuit`` for Aer (optimisation level 0: Aer runs mcx/mcp natively).

    Without a noise model the pass manager is cached; a noise model restricts the basis to its own
    gates, so it gets a fresh one.
    """
    if noise is None:
        return _aer_pass_manager().run(circuit)
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    return transpile(circuit, AerSimulator(noise_model=noise), optimization_level=0)


def aer_circuit(problem: GroverProblem, measure: bool, noise: NoiseModel | None = None) -> Any:
    """``build_circuit(problem)`` transpiled for Aer, with Oracle and Diffuser transpiled once.

    Level-0 transpilation only rewrites each gate into Aer's basis (h, x, mcx, mcp, ... run
    natively), so transpiling the two blocks once and repeating them k times gives the same
    circuit as transpiling the whole thing, in O(1) instead of O(k) synthesis calls.
    """
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

    from quantum.circuits import build_oracle, diffuser

    n = problem.n_qubits
    oracle = aer_transpile(build_oracle(problem), noise)
    diff = aer_transpile(diffuser(n), noise)
    q = QuantumRegister(n, "q")
    regs = [q] + ([QuantumRegister(1, "flag")] if problem.oracle_style == "mcp_flag" else [])
    qc = QuantumCircuit(*regs)
    if measure:
        qc.add_register(ClassicalRegister(n, "c"))
    qc.h(q)
    if len(regs) > 1:
        qc.x(n)
    all_qubits, search = list(range(qc.num_qubits)), list(range(n))
    for _ in range(problem.iterations):
        qc.compose(oracle, all_qubits, inplace=True)
        qc.compose(diff, search, inplace=True)
    if measure:
        qc.measure(q, qc.cregs[0])
    return qc


def _simulate_aer(
    problem: GroverProblem, shots: int | None, seed: int | None, noise: NoiseModel | None
) -> Any:
    from qiskit_aer import AerSimulator

    n = problem.n_qubits
    limit = MAX_NOISY_QUBITS if (noise is not None and shots is None) else MAX_AER_QUBITS
    if n > limit:
        raise GroverProblemError(
            f"n_qubits={n} is too large for the aer backend here (max {limit}); "
            "use backend='statevector' or 'analytic'"
        )
    check_resources(problem, "aer")
    if shots is not None:
        sim = AerSimulator(noise_model=noise, seed_simulator=seed)
        qc = aer_circuit(problem, True, noise)
        counts = sim.run(qc, shots=shots).result().get_counts()
        return dict(sorted((k.replace(" ", ""), int(v)) for k, v in counts.items()))
    qc = aer_circuit(problem, False, noise)
    if noise is None:
        sim = AerSimulator(method="statevector")
        qc.save_statevector()
        sv = np.asarray(sim.run(qc).result().get_statevector())
        probs = np.abs(sv) ** 2
    else:
        sim = AerSimulator(method="density_matrix", noise_model=noise)
        qc.save_probabilities()
        probs = np.asarray(sim.run(qc).result().data()["probabilities"], dtype=np.float64)
    if qc.num_qubits > n:  # mcp_flag: marginalise the flag qubit (the highest index)
        probs = probs.reshape(2, 2**n).sum(axis=0)
    return probs


def simulate(
    problem: GroverProblem,
    backend: str = "auto",
    shots: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    noise: NoiseModel | None = None,
) -> Any:
    """Output distribution of ``problem`` measured on its n search qubits.

    Args:
        problem: the instance.
        backend: ``"auto"`` (= ``"analytic"``), ``"analytic"``, ``"statevector"`` or ``"aer"``.
        shots: ``None`` for exact probabilities, else the number of samples.
        seed: sampling seed (``seed_simulator`` for Aer).
        device: ``"cpu"`` or ``"cuda"`` (``"statevector"`` backend only).
        noise: an Aer ``NoiseModel`` (``"aer"`` backend only), e.g. :func:`depolarizing_noise`.

    Returns:
        Without shots, a float64 array of length 2**n (index int(bitstring, 2)); with shots, a dict
        bitstring -> count, sorted by bitstring.
    """
    if backend not in BACKENDS:
        raise GroverProblemError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise GroverProblemError(f"shots={shots!r} must be a positive int or None")
    if noise is not None and backend != "aer":
        raise GroverProblemError(f"a noise model needs backend='aer', not {backend!r}")
    if device != "cpu" and backend != "statevector":
        raise GroverProblemError(
            f"device={device!r} is only used by backend='statevector', not {backend!r}"
        )
    if backend == "aer":
        return _simulate_aer(problem, shots, seed, noise)
    if backend == "statevector":
        psi = statevector(problem, device)
        if not isinstance(psi, np.ndarray):
            psi = psi.cpu().numpy()
        probs = psi * psi
        if shots is None:
            return probs
        rng = np.random.default_rng(seed)
        hits = rng.multinomial(shots, probs / probs.sum())
        n = problem.n_qubits
        return {format(int(i), f"0{n}b"): int(hits[i]) for i in np.flatnonzero(hits)}
    dist = two_level(problem)
    if shots is None:
        check_resources(problem, "analytic")
        return dist.dense()
    return dist.sample(shots, seed)
