"""Linear systems: the input checks and the solve record that every solver shares.

Classical solvers (:mod:`newton.solvers`), HHL (:mod:`newton.hhl`) and the scheduler all return
``(x, SolveInfo)`` and check their input here, so no solver module imports another one's internals
(HHL used to import the solvers module, whose ``solve`` imported HHL back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from newton.errors import NonFiniteError, NotPositiveDefiniteError, NotSquareError
from newton.spectrum import check_symmetric, to_real_array

__all__ = ["SolveInfo", "as_array", "check_rhs", "check_spd"]


@dataclass
class SolveInfo:
    """What one solve did: backend, problem size and conditioning, time, accuracy."""

    backend: str  # "cholesky", "cg", "hhl_aer", "quantum_model"
    n: int  # system size N
    wall_s: float = 0.0  # measured wall time of the solve (simulation time for hhl_aer)
    residual: float | None = None  # ||A x - b|| / ||b||
    kappa: float | None = None  # condition number used (estimate or exact)
    lambda_min: float | None = None
    lambda_max: float | None = None
    d: int | None = None  # row sparsity of the matrix
    epsilon: float | None = None  # target precision
    iterations: int | None = None  # CG iterations / matvecs
    p_success: float | None = None  # HHL post-selection probability
    predicted_s: dict[str, float] = field(default_factory=dict)  # modelled time of each backend
    extra: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The solve as a flat JSON-ready record (predictions as ``pred_<backend>_s``, scalar extras)."""
        rec = {k: v for k, v in self.__dict__.items() if k not in ("extra", "predicted_s")}
        rec.update({f"pred_{k}_s": v for k, v in self.predicted_s.items()})
        rec.update({k: v for k, v in self.extra.items() if isinstance(v, int | float | str)})
        return rec


def as_array(a: Any) -> np.ndarray:
    """A float64 numpy array of ``a`` (complex input raises NotRealError)."""
    return to_real_array(a)


def check_spd(a: np.ndarray, *, name: str = "A") -> np.ndarray:
    """Raise unless ``a`` is finite, square, symmetric and positive definite; returns its Cholesky factor."""
    check_symmetric(a, name=name)
    try:
        return np.asarray(scipy.linalg.cholesky(a, lower=True))
    except np.linalg.LinAlgError as err:
        lmin = float(np.linalg.eigvalsh(a)[0])
        raise NotPositiveDefiniteError(
            f"{name} is not positive definite (smallest eigenvalue {lmin:.3g}); add damping "
            f"delta > {max(0.0, -lmin):.3g} (A + delta I) or use a PSD curvature ('ggn', 'fisher')"
        ) from err


def check_rhs(b: np.ndarray, n: int) -> np.ndarray:
    """``b`` as a finite float64 vector of length ``n``, else a :class:`NewtonError` subclass naming it."""
    b = np.asarray(b, dtype=np.float64).reshape(-1) if b.ndim <= 1 else b
    if b.shape != (n,):
        raise NotSquareError(f"b has shape {b.shape} but A is {n}x{n}; b must have length {n}")
    if not np.isfinite(b).all():
        raise NonFiniteError("b (the gradient) has NaN or infinite entries; check the loss and lr")
    return b
