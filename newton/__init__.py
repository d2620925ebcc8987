"""newton: Q-Newton, damped Newton training whose Hessian solves a scheduler sends to classical
solvers or to HHL simulated on Aer, with cost models for both (arXiv 2405.00252, rebuilt).

Public names load lazily (``import newton`` does not import torch or qiskit):

    estimate_condition_number(operator, *, damping=0.0, psd=True) -> KappaEstimate
    hhl_solve(A, b, *, clock_qubits=6, shots=None, seed=None) -> (x, SolveInfo)
    solve(A, b, backend) -> (x, SolveInfo)       # cholesky | cg | hhl | quantum_model
    Curvature(model, batches, loss_fn, kind="ggn")
    Scheduler(SchedulerConfig(...)), QNewton(params, *, scheduler, damping, ...)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ClassicalCostModel",
    "Curvature",
    "KappaEstimate",
    "LevenbergMarquardt",
    "NewtonError",
    "QNewton",
    "QuantumCostModel",
    "Scheduler",
    "SchedulerConfig",
    "SolveInfo",
    "cg_solve",
    "cholesky_solve",
    "estimate_condition_number",
    "hhl_solve",
    "kappa_target_damping",
    "quantum_model_solve",
    "query_count",
    "read_idx",
    "solve",
    "sparsify",
    "sparsify_to_budget",
]

_WHERE = {
    "ClassicalCostModel": "newton.cost",
    "QuantumCostModel": "newton.cost",
    "query_count": "newton.cost",
    "Curvature": "newton.curvature",
    "KappaEstimate": "newton.spectrum",
    "estimate_condition_number": "newton.spectrum",
    "LevenbergMarquardt": "newton.damping",
    "kappa_target_damping": "newton.damping",
    "NewtonError": "newton.errors",
    "QNewton": "newton.optimizer",
    "Scheduler": "newton.scheduler",
    "SchedulerConfig": "newton.scheduler",
    "SolveInfo": "newton.systems",
    "cg_solve": "newton.solvers",
    "cholesky_solve": "newton.solvers",
    "quantum_model_solve": "newton.solvers",
    "solve": "newton.solvers",
    "hhl_solve": "newton.hhl",
    "read_idx": "newton.data",
    "sparsify": "newton.sparsity",
    "sparsify_to_budget": "newton.sparsity",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'newton' has no attribute {name!r}")
