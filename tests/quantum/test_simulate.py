"""Every backend against Qiskit's Statevector, plus the closed form at large n."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit.quantum_info import Statevector

from qhybrid import QHybridError
from quantum import GroverProblem, build_circuit, exact_distribution, simulate, two_level
from quantum.simulate import depolarizing_noise, statevector

CASES = [
    (1, ["1"], 1),
    (2, ["01"], None),
    (2, ["00", "11"], None),
    (3, ["101", "000"], None),
    (3, ["110"], 7),
    (4, ["0110", "1111", "0001"], 5),
    (5, ["10011"], 0),
    (6, ["000000", "101010"], None),
]
STYLES = ["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"]


def qiskit_probs(p: GroverProblem) -> np.ndarray:
    return Statevector(build_circuit(p, measure=False)).probabilities(list(range(p.n_qubits)))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("n", "marked", "k"), CASES)
def test_all_backends_equal_qiskit_statevector(style, n, marked, k):
    p = GroverProblem(n, marked, k, style)
    ref = qiskit_probs(p)
    for backend in ("analytic", "statevector", "aer", "auto"):
        got = simulate(p, backend)
        assert got.shape == (2**n,) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, atol=1e-10, rtol=0, err_msg=backend)
    np.testing.assert_allclose(exact_distribution(p), ref, atol=1e-10, rtol=0)


def test_own_statevector_amplitudes_equal_qiskit_up_to_global_phase():
    p = GroverProblem(5, ["00101", "11100"], iterations=4)
    ref = Statevector(build_circuit(p, measure=False)).data
    psi = statevector(p)
    overlap = abs(np.vdot(ref, psi))
    assert overlap == pytest.approx(1.0, abs=1e-12)


def test_closed_form_is_the_textbook_formula_and_normalised():
    p = GroverProblem(8, ["00000001", "10000000"], iterations=9)
    d = two_level(p)
    theta = math.asin(math.sqrt(2 / 256))
    assert d.success_probability == pytest.approx(math.sin(19 * theta) ** 2, abs=1e-15)
    assert exact_distribution(p).sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", [30, 45, 60])
def test_two_level_form_works_up_to_60_qubits(n):
    p = GroverProblem(n, ["1" * n, "0" * n])
    d = two_level(p)
    total = 2 * d.p_marked_each + (2**n - 2) * d.p_rest_each
    assert total == pytest.approx(1.0, abs=1e-12)
    assert d.success_probability > 0.99
    counts = d.sample(1000, seed=0)
    assert sum(counts.values()) == 1000 and all(len(s) == n for s in counts)


def test_statevector_matches_closed_form_at_n16_with_many_iterations():
    p = GroverProblem(16, ["0110011001100110", "1" * 16, "0" * 15 + "1"])
    np.testing.assert_allclose(simulate(p, "statevector"), simulate(p, "analytic"), atol=1e-12)


def test_shots_are_seeded_and_sum_to_shots():
    p = GroverProblem(4, ["0110"])
    for backend in ("analytic", "statevector", "aer"):
        a = simulate(p, backend, shots=500, seed=7)
        assert a == simulate(p, backend, shots=500, seed=7)
        assert sum(a.values()) == 500 and max(a, key=a.get) == "0110"


def test_aer_shots_agree_with_exact_distribution_statistically():
    p = GroverProblem(3, ["011", "100"], iterations=2)
    counts = simulate(p, "aer", shots=20000, seed=3)
    exact = exact_distribution(p)
    freq = np.array([counts.get(format(i, "03b"), 0) for i in range(8)]) / 20000
    assert np.abs(freq - exact).max() < 0.02


def test_aer_noise_model_lowers_success_but_stays_a_distribution():
    p = GroverProblem(3, ["101"])
    noisy = simulate(p, "aer", noise=depolarizing_noise(0.002))
    clean = exact_distribution(p)
    assert noisy.sum() == pytest.approx(1.0, abs=1e-9)
    assert 0.3 < noisy[5] < clean[5] - 1e-3
    counts = simulate(p, "aer", shots=200, seed=1, noise=depolarizing_noise(0.002))
    assert sum(counts.values()) == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "magic"}, "unknown backend 'magic'"),
        ({"shots": 0}, "shots=0"),
        ({"backend": "analytic", "device": "cuda"}, "only used by backend='statevector'"),
        ({"backend": "statevector", "device": "tpu"}, "unknown device 'tpu'"),
        ({"backend": "analytic", "noise": object()}, "needs backend='aer'"),
    ],
)
def test_bad_simulate_arguments(kwargs, match):
    with pytest.raises(QHybridError, match=match):
        simulate(GroverProblem(3, ["001"]), **kwargs)


def test_too_large_for_backend_names_the_limit():
    big = GroverProblem(40, ["1" * 40])
    with pytest.raises(QHybridError, match="n_qubits=40.*two_level"):
        exact_distribution(big)
    with pytest.raises(QHybridError, match="too large for the aer backend"):
        simulate(big, "aer")
    with pytest.raises(QHybridError, match="too large for the statevector backend"):
        simulate(big, "statevector")
    with pytest.raises(QHybridError, match="'diagonal' needs 2\\*\\*n"):
        build_circuit(GroverProblem(17, ["1" * 17], oracle_style="diagonal"))


@pytest.mark.gpu
def test_torch_cuda_statevector_matches_closed_form():
    p = GroverProblem(18, ["0" * 18, "1" * 18, "01" * 9])
    np.testing.assert_allclose(
        simulate(p, "statevector", device="cuda"), simulate(p, "analytic"), atol=1e-10
    )


def test_torch_code_path_matches_numpy_on_cpu():
    # the CUDA path is the same torch code; running it on CPU checks it on every machine
    from quantum.simulate import _statevector_torch

    p = GroverProblem(12, ["000000000111", "101010101010"], iterations=70)
    psi = _statevector_torch(p, "cpu").numpy()
    np.testing.assert_allclose(psi * psi, simulate(p, "analytic"), atol=1e-12)
    np.testing.assert_allclose(psi, statevector(p), atol=1e-12)


@given(
    n=st.integers(1, 10),
    data=st.data(),
    k=st.integers(0, 40),
)
@settings(max_examples=60, deadline=None)
def test_property_own_statevector_equals_closed_form(n, data, k):
    t = data.draw(st.integers(1, min(4, 2**n - 1)))
    idx = data.draw(st.lists(st.integers(0, 2**n - 1), min_size=t, max_size=t, unique=True))
    p = GroverProblem(n, [format(i, f"0{n}b") for i in idx], k)
    exact = simulate(p, "analytic")
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(simulate(p, "statevector"), exact, atol=1e-12)


def test_work_and_memory_are_checked_before_they_are_spent(monkeypatch):
    import importlib

    from quantum import render

    sim_module = importlib.import_module("quantum.simulate")  # the name 'simulate' is the function

    huge_k = GroverProblem(3, ["011"], 10**12)
    for backend in ("statevector", "aer"):
        with pytest.raises(QHybridError, match=r"amplitude updates exceed .*backend='analytic'"):
            simulate(huge_k, backend)
    # the closed form needs neither: same problem, answered at once
    assert simulate(huge_k, "analytic").shape == (8,)
    with pytest.raises(QHybridError, match="Qiskit would build every gate"):
        simulate(GroverProblem(3, ["011"], sim_module.MAX_CIRCUIT_ITERATIONS + 1), "aer")
    with pytest.raises(QHybridError, match="use fmt='qasm3_loop'"):
        render(GroverProblem(3, ["011"], 10**9), "qasm3")
    assert "repeat 1 0 0 0 0 0 0 0 0 0" in render(GroverProblem(3, ["011"], 10**9), "compact")
    # memory: what the backend holds at once against what the machine has
    monkeypatch.setattr(sim_module, "available_memory", lambda device="cpu": 2**19)
    problem = GroverProblem(16, ["1" * 16])
    with pytest.raises(QHybridError, match=r"needs about 0\.0 GiB; 0\.0 GiB are available"):
        simulate(problem, "statevector")  # state + probabilities: 16 bytes x 2^16 = 1 MiB
    assert simulate(GroverProblem(12, ["1" * 12]), "statevector").shape == (4096,)


def test_available_memory_is_a_plausible_number():
    from quantum.simulate import available_memory

    have = available_memory()
    assert 2**26 < have < 2**50
