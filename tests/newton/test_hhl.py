"""HHL on Aer against numpy.linalg.solve (the issue's fidelity targets)."""

from __future__ import annotations

import numpy as np
import pytest

from newton.errors import (
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSquareError,
    NotSymmetricError,
    TooLargeForHHLError,
)
from newton.hhl import hhl_solve


def spd(n: int, kappa: float, seed: int) -> np.ndarray:
    """Random orthogonal eigenvectors; eigenvalues 1 and kappa plus uniform ones in between."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = np.r_[1.0, kappa, rng.uniform(1.0, kappa, n - 2)][:n]
    a = (q * ev) @ q.T
    return (a + a.T) / 2


def fidelity(x: np.ndarray, y: np.ndarray) -> float:
    return float((x @ y) ** 2 / (x @ x) / (y @ y))


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("kappa", [2.0, 10.0])
def test_statevector_hhl_meets_targets(n, kappa):
    a = spd(n, kappa, seed=n)
    b = np.random.default_rng(n + 1).standard_normal(n)
    x, info = hhl_solve(a, b, clock_qubits=6)
    exact = np.linalg.solve(a, b)
    assert fidelity(x, exact) >= 0.9999
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) <= 3e-2  # norm and sign recovered
    assert info.backend == "hhl_aer" and info.extra["qubits"] == int(np.log2(n)) + 7
    # success probability C^2 ||A^-1 b||^2 / ||b||^2 with C = 0.9 lambda_min
    expected_p = (0.9 * np.linalg.norm(exact) / np.linalg.norm(b)) ** 2
    assert info.p_success == pytest.approx(expected_p, rel=0.05)


def test_success_probability_at_least_0_2_for_well_spread_right_hand_sides():
    # p >= 0.2 needs b not concentrated on the top eigenvectors (worst case is (0.9 / kappa)^2).
    a = spd(4, 4.0, seed=7)
    w, v = np.linalg.eigh(a)
    b = v @ (1.0 / w)  # weight ~ 1/lambda on each eigenvector
    _, info = hhl_solve(a, b)
    assert info.p_success >= 0.2


def test_kappa_50_with_8_clock_qubits():
    a = spd(4, 50.0, seed=3)
    b = np.random.default_rng(0).standard_normal(4)
    x, _ = hhl_solve(a, b, clock_qubits=8)
    assert fidelity(x, np.linalg.solve(a, b)) >= 0.9999


def test_non_power_of_two_is_padded():
    a = spd(5, 5.0, seed=5)
    b = np.random.default_rng(5).standard_normal(5)
    x, info = hhl_solve(a, b)
    assert x.shape == (5,) and info.extra["padded_n"] == 8
    assert fidelity(x, np.linalg.solve(a, b)) >= 0.9999


def test_shots_readout_recovers_signs_and_norm():
    a = spd(4, 4.0, seed=4)
    b = np.random.default_rng(4).standard_normal(4)
    x1, info = hhl_solve(a, b, shots=20000, seed=11)
    x2, _ = hhl_solve(a, b, shots=20000, seed=11)
    exact = np.linalg.solve(a, b)
    np.testing.assert_array_equal(x1, x2)  # seeded
    assert fidelity(x1, exact) >= 0.999
    assert np.linalg.norm(x1 - exact) / np.linalg.norm(exact) <= 0.05
    assert info.extra["circuits"] == 3


def test_bad_input():
    with pytest.raises(TooLargeForHHLError):
        hhl_solve(np.eye(17), np.ones(17))
    with pytest.raises(NotSquareError):
        hhl_solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(NotSymmetricError):
        hhl_solve(np.array([[2.0, 1.0], [0.0, 2.0]]), np.ones(2))
    with pytest.raises(NotPositiveDefiniteError):
        hhl_solve(np.diag([1.0, -1.0]), np.ones(2))
    with pytest.raises(NonFiniteError):
        hhl_solve(np.eye(2), np.array([1.0, np.nan]))
    with pytest.raises(NotSquareError):
        hhl_solve(np.eye(2), np.ones(3))


BAD_HHL_INPUT = [
    # (what, kwargs for hhl_solve on A = diag(1, 4), b = (1, 1), error, text in the message)
    ("bounds above lambda_min", {"lambda_bounds": (2.0, 4.0)}, "BoundsError", "do not contain"),
    ("bounds below lambda_max", {"lambda_bounds": (1.0, 3.0)}, "BoundsError", "do not contain"),
    ("zero lower bound", {"lambda_bounds": (0.0, 4.0)}, "BoundsError", "0 < low"),
    ("inverted bounds", {"lambda_bounds": (4.0, 1.0)}, "BoundsError", "0 < low"),
    ("infinite bound", {"lambda_bounds": (1.0, float("inf"))}, "BoundsError", "finite"),
    ("not a pair", {"lambda_bounds": (1.0,)}, "BoundsError", "pair"),
    ("complex A", {"a": np.diag([1.0, 4.0]) + 0j}, "NotRealError", "complex"),
    ("complex b", {"b": np.array([1.0, 1j])}, "NotRealError", "complex"),
    (
        "non-symmetric A",
        {"a": np.array([[1.0, 0.5], [0.0, 4.0]])},
        "NotSymmetricError",
        "symmetric",
    ),
    ("clock qubits 0", {"clock_qubits": 0}, "TooLargeForHHLError", "clock_qubits=0"),
    ("clock qubits float", {"clock_qubits": 6.0}, "NewtonError", "clock_qubits=6.0"),
    ("shots 0", {"shots": 0}, "NewtonError", "shots=0"),
]


@pytest.mark.parametrize("what,kwargs,error,text", BAD_HHL_INPUT, ids=[c[0] for c in BAD_HHL_INPUT])
def test_hhl_input_checks(what, kwargs, error, text):
    import newton.errors as errors

    args = {"a": np.diag([1.0, 4.0]), "b": np.ones(2), **kwargs}
    with pytest.raises(getattr(errors, error), match=text):
        hhl_solve(args.pop("a"), args.pop("b"), **args)


def test_bounds_that_contain_the_spectrum_are_accepted_and_each_solve_reports_its_error():
    a, b = spd(4, 5.0, 3), np.ones(4)
    eig = np.linalg.eigvalsh(a)
    x, info = hhl_solve(a, b, lambda_bounds=(0.9 * eig[0], 1.1 * eig[-1]))
    exact = np.linalg.solve(a, b)
    assert info.extra["rel_error"] == pytest.approx(
        np.linalg.norm(x - exact) / np.linalg.norm(exact), rel=1e-12
    )
    assert info.extra["rel_error"] <= 0.05


def test_sine_clock_circuit_is_exact_and_cheap():
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit.library import UnitaryGate
    from qiskit.quantum_info import Statevector

    from newton.hhl import sine_window, state_preparation

    for t in (1, 3, 6):
        qc = state_preparation(sine_window(t))
        np.testing.assert_allclose(Statevector(qc).data.real, sine_window(t), atol=1e-12)
    qc = state_preparation(sine_window(6))
    cx = transpile(qc, basis_gates=["cx", "u"]).count_ops().get("cx", 0)
    # a generic unitary taking |0> to the window (what the clock used before)
    w = sine_window(6)
    v = np.eye(64)[0] - w
    generic = QuantumCircuit(6)
    generic.append(UnitaryGate(np.eye(64) - 2 * np.outer(v, v) / (v @ v)), range(6))
    cx_generic = transpile(generic, basis_gates=["cx", "u"]).count_ops().get("cx", 0)
    assert cx <= 2**6 and cx * 10 < cx_generic


def test_amplitude_amplification_model_matches_a_simulated_grover_iterate():
    from newton.hhl import amplitude_amplification

    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((16, 16)))[0]  # any state-preparing circuit
    good = np.zeros(16)
    good[:1] = 1.0  # the "ancilla = 1, clock = 0" subspace: here basis state 0
    psi = u[:, 0]
    p = float(psi[0] ** 2)
    model = amplitude_amplification(p)
    s_good = np.eye(16) - 2 * np.diag(good)
    s_zero = np.eye(16) - 2 * np.outer(np.eye(16)[0], np.eye(16)[0])
    grover = -u @ s_zero @ u.T @ s_good
    state = psi
    for _ in range(model["rounds"]):
        state = grover @ state
    assert state[0] ** 2 == pytest.approx(model["p_amplified"], abs=1e-12)
    assert model["p_amplified"] >= 0.5 and model["circuit_uses"] == 2 * model["rounds"] + 1


@pytest.mark.parametrize("seed", range(5))
def test_random_b_success_probability_at_least_half_after_amplification(seed):
    rng = np.random.default_rng(seed)
    a, b = spd(8, 10.0, seed), rng.standard_normal(8)
    _, info = hhl_solve(a, b)
    assert info.extra["p_success_amplified"] >= 0.5
    assert info.extra["aa_circuit_uses"] == 2 * info.extra["aa_rounds"] + 1
