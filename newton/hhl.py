"""HHL built from Qiskit 2.x parts and run on Aer.

HHL (Harrow, Hassidim, Lloyd, arXiv 0811.3171) prepares ``|x> ~ A^{-1} |b>`` for Hermitian A:

1. load ``|b>`` on the system register (``StatePreparation``);
2. phase estimation of ``U = exp(i A t0)`` onto a clock register of t qubits (the paper's sine
   state on the clock instead of Hadamards, controlled
   powers ``U^{2^k}`` as exact ``UnitaryGate``\\ s, inverse ``QFTGate``), so eigenvector ``|u_j>``
   carries the clock value ``m_j = 2^t lambda_j t0 / (2 pi)``;
3. rotate an ancilla by ``2 arcsin(C / lambda(m))`` for each clock value with one uniformly
   controlled RY (``UCRYGate``);
4. undo the phase estimation; post-select ancilla = 1 and clock = 0.

The post-selected system amplitudes equal ``C A^{-1} b / ||b||`` (up to phase-estimation error),
with success probability ``p = C^2 ||A^{-1} b||^2 / ||b||^2``, so ``x = amplitudes * ||b|| / C`` and
``||x|| = sqrt(p) ||b|| / C``. The scaling constant C comes from a classical lower bound of
``lambda_min`` (the kappa estimator): too small a C wastes success probability (it falls 4x per
clock qubit with the naive C = smallest grid value), too large clips the rotation.

``t0 = 2 pi (2^t - 3) / (2^t lambda_max)`` puts the eigenphases in (0, 1) with two grid steps to
spare at the top. Measured over random SPD spectra (N <= 16, kappa <= 10, t = 6) the worst fidelity
is 0.99997 with the sine clock state, against 0.9969 with Hadamards. The read-out:

- ``shots=None``: Aer's statevector gives the amplitudes; the global phase is fixed so that
  ``x . b > 0``, which holds for every SPD A (``b^T A^{-1} b > 0``), without looking at the answer.
- ``shots=S``: measurement only. The magnitudes come from S shots of the circuit (post-selected
  counts); the relative signs from one more circuit per system qubit k with a Hadamard on qubit k
  (outcome probabilities ``(x_i +- x_j)^2 / 2`` for the pair ``j = i xor 2^k``); the global sign from
  ``x . b > 0``; the norm from the success rate. Every number comes from counts.

The controlled powers are exact unitaries (an oracle model: gate counts are those of generic
unitary synthesis, not of a Hamiltonian-simulation circuit). Aer executes them natively, which is
what makes a 4-qubit-system, 6-clock-qubit solve take a fraction of a second.

Qiskit removed its HHL in 0.24; ``quantum-linear-solvers`` does not import on Qiskit >= 1.0
(``qiskit.opflow`` is gone). This module uses only non-deprecated Qiskit 2.x parts.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from newton.errors import (
    BoundsError,
    NewtonError,
    NonFiniteError,
    NotRealError,
    NotSquareError,
    TooLargeForHHLError,
)
from newton.systems import SolveInfo, check_spd

logger = logging.getLogger(__name__)

__all__ = [
    "HHL_MAX_N",
    "HHLCircuit",
    "amplitude_amplification",
    "build_hhl_circuit",
    "hhl_solve",
    "resolvable_kappa",
    "sine_window",
    "state_preparation",
]

HHL_MAX_N = 16  # largest system the state-vector simulation supports (4 system qubits)
CLOCK_MARGIN = 2  # grid steps kept free above lambda_max (see build_hhl_circuit)


def sine_window(t: int) -> np.ndarray:
    """The clock's initial amplitudes ``sqrt(2/T) sin(pi (tau + 1/2) / T)``, ``T = 2^t`` (HHL, eq. A1)."""
    m = 2**t
    w = np.sin(math.pi * (np.arange(m) + 0.5) / m)
    return w / np.linalg.norm(w)


@dataclass
class HHLCircuit:
    """The HHL circuit and the constants needed to read its result."""

    circuit: Any  # qiskit.QuantumCircuit, qubits: system (n), clock (t), ancilla (1)
    n_system: int
    clock_qubits: int
    t0: float  # evolution time of U = exp(i A t0)
    scale_c: float  # the rotation constant C
    lambda_grid: np.ndarray  # eigenvalue assigned to each clock value


@functools.lru_cache(maxsize=8)
def _backend(seed: int | None) -> tuple[Any, Any]:
    """An Aer state-vector simulator and its transpiler pass manager, built once per seed.

    Building Aer's ``Target`` costs ~0.4 s (most of a naive ``transpile`` call); the pass manager
    that uses it is reusable, so every solve still transpiles its own circuit, quickly.
    """
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    sim = AerSimulator(method="statevector", seed_simulator=seed)
    return sim, generate_preset_pass_manager(optimization_level=0, backend=sim)


def state_preparation(amplitudes: np.ndarray) -> Any:
    """A circuit taking ``|0...0>`` to ``sum_i a_i |i>`` for real ``a_i >= 0`` (Grover-Rudolph).

    Level k rotates qubit ``t-1-k`` (most significant first) by
    ``2 arccos sqrt(mass(prefix, bit 0) / mass(prefix))``, uniformly controlled on the k qubits
    above it (one ``UCRYGate`` per level): ``2^t - 1`` rotations and ``2^t - 2`` CX in all, 62 at
    t = 6, where a generic unitary on the clock transpiles to about 1,800 (Grover & Rudolph,
    arXiv quant-ph/0208112; Mottonen et al., quant-ph/0407010).
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import UCRYGate

    amps = np.asarray(amplitudes, dtype=np.float64)
    t = int(round(math.log2(len(amps))))
    if len(amps) != 2**t or (amps < 0).any() or not math.isclose(float(amps @ amps), 1.0):
        raise NewtonError("state_preparation needs 2^t non-negative amplitudes of unit norm")
    qc = QuantumCircuit(t, name="sine clock")
    probs = amps**2
    for level in range(t):
        blocks = probs.reshape(2**level, 2, -1)  # (prefix of `level` high bits, bit, rest)
        zero, total = blocks[:, 0, :].sum(axis=1), blocks.sum(axis=(1, 2))
        angles = [
            2 * math.acos(math.sqrt(min(1.0, z / m))) if m > 0 else 0.0
            for z, m in zip(zero, total, strict=True)
        ]
        target = t - 1 - level
        if level == 0:
            qc.ry(angles[0], target)
        else:  # the control state's integer (controls little-endian) is the prefix
            qc.append(UCRYGate(angles), [target, *range(t - level, t)])
    return qc


def _controlled(u: np.ndarray) -> np.ndarray:
    """``|0><0| (x) I + |1><1| (x) U`` with the control as the least significant qubit (Qiskit order)."""
    p0 = np.diag([1.0, 0.0])
    p1 = np.diag([0.0, 1.0])
    return np.kron(np.eye(u.shape[0]), p0) + np.kron(u, p1)


def build_hhl_circuit(
    a: np.ndarray,
    b: np.ndarray,
    *,
    clock_qubits: int,
    lambda_min: float,
    lambda_max: float,
    clock_state: str = "sine",
) -> HHLCircuit:
    """The HHL circuit for a padded ``(2^n, 2^n)`` SPD ``a`` and ``b`` (no measurements).

    Args:
        a: SPD matrix whose size is a power of two.
        b: right-hand side (normalised here).
        clock_qubits: phase-estimation precision t.
        lambda_min: a lower bound of the smallest eigenvalue (sets C).
        lambda_max: an upper bound of the largest eigenvalue (sets t0).
        clock_state: ``"sine"`` (HHL's paper, default) or ``"uniform"`` (Hadamards, the textbook
            and old-Qiskit choice, with no margin at the top; kept for comparison).
    """
    from qiskit import QuantumCircuit, QuantumRegister
    from qiskit.circuit.library import QFTGate, StatePreparation, UCRYGate, UnitaryGate

    n_dim = a.shape[0]
    n = int(round(math.log2(n_dim)))
    t = clock_qubits
    m = 2**t
    # lambda_max maps CLOCK_MARGIN grid steps below the top, so the main lobe of the phase-estimation
    # kernel of the largest eigenvalue does not wrap around to clock value 0 (where 1/lambda blows up).
    if clock_state not in ("sine", "uniform"):
        raise NewtonError(f"clock_state={clock_state!r} must be 'sine' or 'uniform'")
    margin = min(CLOCK_MARGIN, m // 4) if clock_state == "sine" else 0
    t0 = 2 * math.pi * (m - 1 - margin) / (m * lambda_max)
    grid = np.array([2 * math.pi * j / (m * t0) for j in range(m)])
    # C as large as the smallest eigenvalue allows (the rotation arcsin(C / lambda) must stay <= 1).
    scale_c = max(grid[1], 0.9 * lambda_min)

    s = QuantumRegister(n, "s")
    c = QuantumRegister(t, "c")
    anc = QuantumRegister(1, "a")
    qpe = QuantumCircuit(s, c, name="qpe")
    # The clock starts in the sine state of HHL's paper, sqrt(2/T) sum_tau sin(pi (tau + 1/2) / T),
    # not the uniform one: its estimation kernel decays as 1/delta^4 instead of 1/delta^2, which
    # lifts the worst-case fidelity at 6 clock qubits from ~0.997 to > 0.9999.
    # (Grover-Rudolph rotations: 62 CX at t = 6 where a generic unitary needs ~1,800; qiskit's
    # StatePreparation multiplexers crash Aer 0.18 when inverted for the uncompute, UCRY does not.)
    if clock_state == "sine":
        qpe.compose(state_preparation(sine_window(t)), c, inplace=True)
    else:
        qpe.h(c)
    for k in range(t):
        u = scipy.linalg.expm(1j * a * t0 * 2**k)
        qpe.append(UnitaryGate(_controlled(u), label=f"cU^{2**k}"), [c[k], *s])
    qpe.append(QFTGate(t).inverse(), c)

    qc = QuantumCircuit(s, c, anc, name="hhl")
    qc.append(StatePreparation(b / np.linalg.norm(b)), s)
    qc.compose(qpe, [*s, *c], inplace=True)
    angles = [0.0] + [2 * math.asin(min(1.0, scale_c / lam)) for lam in grid[1:]]
    qc.append(UCRYGate(angles), [anc[0], *c])
    qc.compose(qpe.inverse(), [*s, *c], inplace=True)
    return HHLCircuit(qc, n, t, t0, scale_c, grid)


def _pad(a: np.ndarray, b: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    n = a.shape[0]
    dim = 1 << max(1, math.ceil(math.log2(n)))
    if dim == n:
        return a, b
    ap = np.eye(dim) * fill
    ap[:n, :n] = a
    bp = np.zeros(dim)
    bp[:n] = b
    return ap, bp


def _signs_from_pairs(mag: np.ndarray, plus: list[np.ndarray], n: int) -> np.ndarray:
    """Relative signs of real amplitudes from Hadamard-on-qubit-k probabilities.

    ``plus[k][i]`` (bit k of i = 0) is the probability ``(x_i + x_j)^2 / 2`` and ``plus[k][j]`` is
    ``(x_i - x_j)^2 / 2`` for ``j = i | 2^k``. Signs spread from the largest amplitude along a
    maximum spanning tree of the weights ``|x_i x_j|`` (Prim), so each sign is read from the
    best-resolved pair and never through a near-zero amplitude.
    """
    dim = len(mag)
    sign = np.zeros(dim)
    start = int(np.argmax(mag))
    sign[start] = 1.0
    done = {start}
    while len(done) < dim:
        best, edge = -1.0, (start, start, 0)
        for i in done:
            for k in range(n):
                j = i ^ (1 << k)
                if j not in done and mag[i] * mag[j] > best:
                    best, edge = mag[i] * mag[j], (i, j, k)
        i, j, k = edge
        lo, hi = min(i, j), max(i, j)
        same = plus[k][lo] >= plus[k][hi]  # (x_lo + x_hi)^2 >= (x_lo - x_hi)^2
        sign[j] = sign[i] if same else -sign[i]
        done.add(j)
    return sign


def resolvable_kappa(clock_qubits: int) -> float:
    """The largest kappa a clock of t qubits resolves: lambda_min at least 4 grid steps up.

    The grid step is ``lambda_max / (2^t - 1 - margin)`` (see :func:`build_hhl_circuit`); with
    lambda_min four steps up the phase-estimation kernel keeps the reciprocal's relative error
    near 1 % (measured: at t = 6 kappa <= 15 gives relative errors <= 2e-2, kappa = 1e5 gave 0.49).
    """
    m = 2**clock_qubits
    return (m - 1 - min(CLOCK_MARGIN, m // 4)) / 4.0


def check_lambda_bounds(
    lambda_bounds: tuple[float, float] | None, eig: np.ndarray
) -> tuple[float, float]:
    """Validate ``(lambda_min_lower, lambda_max_upper)`` against the exact spectrum ``eig``.

    None gives the exact range. Bounds that exclude part of the spectrum make HHL wrong
    silently (a clipped rotation, or a phase that wraps around), so they raise.
    """
    if lambda_bounds is None:
        return float(eig[0]), float(eig[-1])
    try:
        lo, hi = (float(v) for v in lambda_bounds)
    except (TypeError, ValueError) as err:
        raise BoundsError(f"lambda_bounds={lambda_bounds!r} must be a pair of numbers") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise BoundsError(f"lambda_bounds=({lo:g}, {hi:g}) must be finite with 0 < low <= high")
    slack = 1e-12 * max(abs(float(eig[-1])), 1e-300)  # eigvalsh round-off
    if lo > float(eig[0]) + slack or hi < float(eig[-1]) - slack:
        raise BoundsError(
            f"lambda_bounds=({lo:.6g}, {hi:.6g}) do not contain the spectrum "
            f"[{eig[0]:.6g}, {eig[-1]:.6g}]; pass proven bounds (estimate_condition_number's "
            "lambda_min_lower and lambda_max_upper + damping) or None for the exact range"
        )
    return lo, hi


def amplitude_amplification(p_success: float) -> dict[str, float]:
    """Exact effect and cost of amplitude amplification on a success probability ``p``.

    With ``theta = arcsin sqrt(p)``, k rounds give ``sin^2((2k + 1) theta)`` exactly (Brassard,
    Hoyer, Mosca, Tapp, quant-ph/0005055) at ``2k + 1`` uses of the HHL circuit (each round runs
    it forward and backward once, plus two reflections). k is the best integer near
    ``pi / (4 theta) - 1/2``, so the amplified probability is at least ``cos^2 theta >= 1/2`` when
    ``p <= 1/2``. Modelled, not simulated: the formula is exact for any circuit, given p.
    """
    if not 0 <= p_success <= 1:
        raise NewtonError(f"p_success={p_success} must lie in [0, 1]")
    if p_success == 0:
        return {"rounds": 0, "p_amplified": 0.0, "circuit_uses": 1}
    theta = math.asin(math.sqrt(p_success))
    ideal = math.pi / (4 * theta) - 0.5
    best = max(
        {max(0, math.floor(ideal)), max(0, math.ceil(ideal))},
        key=lambda k: math.sin((2 * k + 1) * theta) ** 2,
    )
    return {
        "rounds": best,
        "p_amplified": math.sin((2 * best + 1) * theta) ** 2,
        "circuit_uses": 2 * best + 1,
    }


def hhl_solve(
    a: np.ndarray,
    b: np.ndarray,
    *,
    clock_qubits: int = 6,
    shots: int | None = None,
    seed: int | None = None,
    lambda_bounds: tuple[float, float] | None = None,
    clock_state: str = "sine",
) -> tuple[np.ndarray, SolveInfo]:
    """Solve ``a x = b`` with HHL on Aer; returns x with its norm and sign, and a :class:`SolveInfo`.

    Args:
        a: real symmetric positive definite ``(N, N)`` array, ``N <= 16`` (padded to ``2^n``).
        b: right-hand side ``(N,)``, non-zero.
        clock_qubits: phase-estimation qubits t (precision ~ ``2^-t``; kappa = 50 needs t >= 8
            for fidelity 0.9999).
        shots: ``None`` for the exact Aer state vector; a number of shots for a measurement-only
            read-out (uses ``n + 1`` circuits of ``shots`` each).
        seed: Aer's simulator seed (shots mode).
        lambda_bounds: ``(lambda_min_lower, lambda_max_upper)``, checked to contain the
            spectrum (:func:`check_lambda_bounds`); default: exact ``eigvalsh``.
        clock_state: ``"sine"`` (default) or ``"uniform"`` (see :func:`build_hhl_circuit`).

    Returns ``info.extra`` with ``rel_error`` (against ``numpy.linalg.solve``), the clock's
    ``kappa_resolvable``, and the exact amplitude-amplification model (``aa_rounds``,
    ``p_success_amplified``, ``aa_circuit_uses``).

    Raises:
        TooLargeForHHLError: ``N > 16``.
        NotRealError: complex A or b (refused, never cast).
        BoundsError: ``lambda_bounds`` that do not contain the spectrum.
        NotSquareError, NotSymmetricError, NotPositiveDefiniteError, NonFiniteError: bad input.

    Example:
        >>> x, info = hhl_solve(np.array([[1.0, -1 / 3], [-1 / 3, 1.0]]), np.array([1.0, 0.0]))
        >>> bool(np.allclose(x, [1.125, 0.375], rtol=3e-2)), info.backend
        (True, 'hhl_aer')
    """
    t_start = time.perf_counter()
    a, b = _check_input(a, b, clock_qubits, shots)
    n_orig = a.shape[0]
    bnorm = float(np.linalg.norm(b))
    if bnorm == 0:
        return np.zeros(n_orig), SolveInfo(backend="hhl_aer", n=n_orig, wall_s=0.0, residual=0.0)
    eig = np.linalg.eigvalsh(a)  # N <= 16: the check costs microseconds
    lmin, lmax = check_lambda_bounds(lambda_bounds, eig)
    ap, bp = _pad(a, b, lmin)  # padded eigenvalue inside [lmin, lmax]; b is 0 there
    hc = build_hhl_circuit(
        ap, bp, clock_qubits=clock_qubits, lambda_min=lmin, lambda_max=lmax, clock_state=clock_state
    )
    if shots is None:
        readout = _statevector_readout(hc, bp, bnorm, seed)
    else:
        readout = _shots_readout(hc, bp, bnorm, seed, shots)
    x = readout.x[:n_orig]
    info = _solve_info(a, b, x, hc, readout, (lmin, lmax), shots)
    info.wall_s = time.perf_counter() - t_start
    return x, info


def _solve_info(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    hc: HHLCircuit,
    readout: _Readout,
    bounds: tuple[float, float],
    shots: int | None,
) -> SolveInfo:
    """The solve's record: residual and error against ``numpy.linalg.solve`` (N <= 16), the
    resources, and the exact amplitude-amplification model of the success probability."""
    lmin, lmax = bounds
    bnorm = float(np.linalg.norm(b))
    exact = np.linalg.solve(a, b)  # the check every solve reports
    amp = amplitude_amplification(min(1.0, max(0.0, readout.p_success)))
    t = hc.clock_qubits
    return SolveInfo(
        backend="hhl_aer",
        n=a.shape[0],
        kappa=lmax / lmin,
        lambda_min=lmin,
        lambda_max=lmax,
        wall_s=0.0,
        residual=float(np.linalg.norm(a @ x - b) / bnorm),
        p_success=readout.p_success,
        extra={
            "padded_n": len(readout.x),
            "clock_qubits": t,
            "qubits": hc.n_system + t + 1,
            "scale_c": hc.scale_c,
            "shots": shots,
            "circuits": readout.circuits,
            "transpile_s": readout.transpile_s,
            "simulate_s": readout.simulate_s,
            "rel_error": float(np.linalg.norm(x - exact) / np.linalg.norm(exact)),
            "kappa_resolvable": resolvable_kappa(t),
            "kappa_bounds": lmax / lmin,
            "aa_rounds": amp["rounds"],
            "p_success_amplified": amp["p_amplified"],
            "aa_circuit_uses": amp["circuit_uses"],
        },
    )


def _check_input(
    a: np.ndarray, b: np.ndarray, clock_qubits: int, shots: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as real float64 arrays, checked (see :func:`hhl_solve`'s Raises)."""
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        raise NotRealError(
            "hhl_solve takes a real symmetric A and a real b, got complex input; write a Hermitian "
            "system in real form [[Re A, -Im A], [Im A, Re A]] [Re x; Im x] = [Re b; Im b]"
        )
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.ndim == 2 and a.shape[0] == a.shape[1] and a.shape[0] > HHL_MAX_N:
        raise TooLargeForHHLError(
            f"HHL simulation supports N <= {HHL_MAX_N}, got a {a.shape[0]}x{a.shape[0]} system; "
            "use the 'quantum_model' backend (modelled quantum solve) or a classical solver"
        )
    check_spd(a)
    if b.shape != (a.shape[0],):
        raise NotSquareError(f"b has shape {b.shape} but A is {a.shape}; b must have length N")
    if not np.isfinite(b).all():
        raise NonFiniteError("b has NaN or infinite entries")
    if isinstance(clock_qubits, bool) or not isinstance(clock_qubits, int):
        raise NewtonError(f"clock_qubits={clock_qubits!r} must be an integer in 1..12")
    if not 1 <= clock_qubits <= 12:
        raise TooLargeForHHLError(f"clock_qubits={clock_qubits} must lie in 1..12")
    if shots is not None and (
        isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= 10**8
    ):
        raise NewtonError(f"shots={shots!r} must be an integer in 1..1e8 or None (state vector)")
    return a, b


@dataclass
class _Readout:
    """What the simulation gave: x (padded length, with norm and sign) and its costs."""

    x: np.ndarray
    p_success: float
    circuits: int
    transpile_s: float
    simulate_s: float


def _statevector_readout(
    hc: HHLCircuit, bp: np.ndarray, bnorm: float, seed: int | None
) -> _Readout:
    """x from Aer's state vector: the post-selected amplitudes (ancilla 1, clock 0), the global
    phase fixed by ``x . b > 0`` (true for every SPD A), scaled by ``||b|| / C``."""
    sim, passes = _backend(seed)
    dim, t = bp.shape[0], hc.clock_qubits
    qc = hc.circuit.copy()
    qc.save_statevector()
    t_tr = time.perf_counter()
    tqc = passes.run(qc)
    transpile_s = time.perf_counter() - t_tr
    t_sim = time.perf_counter()
    sv = np.asarray(sim.run(tqc).result().get_statevector())
    simulate_s = time.perf_counter() - t_sim
    post = sv[dim * 2**t : dim * 2**t + dim]  # ancilla = 1, clock = 0
    p_succ = float(np.vdot(post, post).real)
    phase = np.vdot(post, bp / bnorm)  # x . b > 0 for SPD A fixes the global phase
    post = post * (phase / abs(phase) if abs(phase) > 0 else 1.0)
    return _Readout(post.real * bnorm / hc.scale_c, p_succ, 1, transpile_s, simulate_s)


def _shots_readout(
    hc: HHLCircuit, bp: np.ndarray, bnorm: float, seed: int | None, shots: int
) -> _Readout:
    """x from counts only (module docstring): magnitudes from the post-selected counts, relative
    signs from one Hadamard circuit per system qubit, the global sign from ``x . b > 0``, the norm
    from the success rate."""
    from qiskit import QuantumCircuit

    sim, passes = _backend(seed)
    dim, t = bp.shape[0], hc.clock_qubits
    circs = []
    for k in [None, *range(hc.n_system)]:
        qc = QuantumCircuit(*hc.circuit.qregs)
        qc.compose(hc.circuit, inplace=True)
        if k is not None:
            qc.h(k)
        qc.measure_all()
        circs.append(qc)
    t_tr = time.perf_counter()
    tqcs = passes.run(circs)
    transpile_s = time.perf_counter() - t_tr
    t_sim = time.perf_counter()
    result = sim.run(tqcs, shots=shots).result()
    simulate_s = time.perf_counter() - t_sim
    probs = []
    kept = 0
    for i in range(len(circs)):
        hist = np.zeros(dim)
        for key, cnt in result.get_counts(i).items():
            idx = int(key.replace(" ", ""), 2)
            if idx >> hc.n_system == 1 << t:  # ancilla 1 (top bit), clock 0
                hist[idx & (dim - 1)] += cnt
        if i == 0:
            kept = int(hist.sum())
        probs.append(hist / shots)
    p_succ = kept / shots
    if kept == 0:
        return _Readout(np.zeros(dim), p_succ, len(circs), transpile_s, simulate_s)
    mag = np.sqrt(probs[0] / p_succ)  # normalised |x_i|
    xhat = mag * _signs_from_pairs(mag, probs[1:], hc.n_system)
    if xhat @ bp < 0:
        xhat = -xhat
    x = xhat * math.sqrt(p_succ) * bnorm / hc.scale_c
    return _Readout(x, p_succ, len(circs), transpile_s, simulate_s)
