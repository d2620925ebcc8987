"""QNewton: damped block-Newton steps whose linear solves a scheduler sends to classical or quantum solvers.

One step (``optimizer.step(closure)``, called by :func:`qhybrid.train.train`):

1. ``loss = closure()``: gradients on the step's micro-batches; a NaN/inf loss or gradient, or a
   loss that is not a scalar, raises a :class:`~newton.errors.NewtonError` before any weight
   changes (so does a NaN/inf curvature product, in step 3).
2. Curvature ``C`` (GGN by default) on the same batches (:mod:`newton.curvature`).
3. Hessian-free (``method="hessian_free"``; ``"auto"``, the default, takes it unless a
   scheduler, a kappa target or sparsification is asked for): one truncated, preconditioned CG
   on ``(C + delta I) p = -g`` over all parameters, warm-started from the last direction, to a
   residual of ``cg_tol`` times the gradient's norm; each product replays the step's cached
   linearisation (Martens 2010). Blocks (``method="blocks"``, where the scheduler and HHL act):
   per block, eigenvalue range (exact ``eigvalsh`` up to 512, Lanczos above), damping
   ``delta = max(delta_LM, delta_kappa)`` (:mod:`newton.damping`), optional symmetric
   sparsification (:mod:`newton.sparsity`), then ``(C_b + delta I) p_b = -g_b`` through the
   :class:`~newton.scheduler.Scheduler`.
4. Safeguards: the step is capped at ``max_step_norm`` (trust radius); a backtracking Armijo line
   search on the loss; when the direction is not a descent direction or the search fails, a plain
   gradient step of size ``fallback_lr`` if that lowers the loss; else the step is rejected and
   the weights restored (trust-region style). The outcome is in the step info.
5. Levenberg-Marquardt: the ratio of actual to predicted decrease adapts ``delta_LM``, kept in the
   param group (``"damping"``) so it is checkpointed with the optimizer state, never below the
   floor ``damping_floor * s / B``: ``s`` the largest curvature seen so far (Rayleigh quotients
   of the CG directions, or the blocks' lambda_max), ``B`` the examples of the curvature batch.

Math:
    p = -(C + delta I)^{-1} g  (whole, by truncated CG; or block-diagonal),   theta <- theta + t p,
    t = lr * 2^-k, the first k with L(theta + t p) <= L(theta) + c t g.p   (Armijo)

References:
    Q-Newton, arXiv 2405.00252; Martens, "Deep learning via Hessian-free optimization", ICML 2010.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Interval
from torch import nn

from newton.curvature import (
    Block,
    Curvature,
    CurvatureKind,
    OutputHessianKind,
    Structure,
    head_of_batch,
    make_blocks,
)
from newton.damping import (
    LevenbergMarquardt,
    combined_damping,
    damping_floor,
    reduction_ratio,
)
from newton.errors import BadValueError, NewtonError, NonFiniteError
from newton.scheduler import Scheduler
from newton.solvers import cg_solve
from newton.sparsity import direction_cosine, sparsify_to_budget
from newton.spectrum import KAPPA_CAP, KappaEstimate, estimate_condition_number
from newton.values import (
    Count,
    Damping,
    Fraction,
    KappaTarget,
    LearningRate,
    NonNegativeCount,
    Positive,
    PriorExamples,
    Tolerance,
    check_declared,
)

logger = logging.getLogger(__name__)

__all__ = ["Method", "QNewton", "check_settings"]

Method = Literal["auto", "hessian_free", "blocks"]
CG_DECAY = 0.95  # warm start: CG begins from this share of the previous direction (Martens 2010)
EMA_BETA = 0.95  # decay of the squared-gradient average behind the diagonal preconditioner


def check_settings(settings: dict[str, Any]) -> None:
    """Check QNewton keyword arguments (the rest at their defaults) before anything is built.

    Each value is checked against its kind in ``QNewton.__init__``'s signature (the one
    declaration, :mod:`newton.values`); the cross-field rules follow. Each error is a
    :class:`~newton.errors.BadValueError` naming the value, the range and the fix.
    """
    import inspect

    sig = inspect.signature(QNewton.__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k not in ("self", "params")}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise BadValueError(f"unknown QNewton setting(s) {unknown}; known: {sorted(defaults)}")
    s = check_declared(QNewton.__init__, {**defaults, **settings})
    if s["method"] == "hessian_free" and (s["sparsify"] or s["kappa_target"] is not None):
        raise BadValueError(
            "sparsify and kappa_target act on the block solves; use method='blocks' (or "
            "'auto', which picks blocks when they are set)"
        )
    if s["method"] == "hessian_free" and s["curvature"] == "hessian":
        raise BadValueError(
            "method='hessian_free' needs a PSD curvature for CG; use curvature='ggn' or 'fisher'"
        )


def _check_scalar_loss(model: nn.Module, batches: list[Any], loss_fn: Callable[..., Any]) -> None:
    """Raise :class:`BadValueError` when ``loss_fn`` does not return a scalar (one forward pass)."""
    with torch.no_grad():
        out = loss_fn(model, batches[0])
    loss = out[0] if isinstance(out, tuple) else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise BadValueError(
            f"loss_fn returned {shape}, not a scalar; QNewton needs the mean loss of the batch "
            "(reduce it with .mean()). No weight was changed"
        )


def _block_summary(block_info: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step summary of the solves: kappas, backends, CG iterations."""
    kappas = [b["kappa"] for b in block_info if b["kappa"] is not None]
    backends: dict[str, int] = {}
    for b in block_info:
        backends[b["backend"]] = backends.get(b["backend"], 0) + 1
    return {
        "kappa_max": max(kappas) if kappas else math.nan,
        "kappa_median": float(np.median(kappas)) if kappas else math.nan,
        "kappa_undamped_max": max(
            (b["kappa_undamped"] for b in block_info if b["kappa"] is not None), default=1.0
        ),
        "blocks": len(block_info),
        "method": "hessian_free" if block_info[0]["backend"] == "hessian_free" else "blocks",
        "cg_iterations": sum(int(b.get("iterations") or 0) for b in block_info),
        "backends": backends,
    }


class QNewton(torch.optim.Optimizer):
    """Damped block-Newton optimizer with a classical/quantum solve scheduler.

    Args:
        params: the parameters to optimise (one param group).
        scheduler: the :class:`~newton.scheduler.Scheduler` that runs each block solve
            (default: ``Scheduler()``, cheapest predicted backend).
        lr: step scale t before the line search (1.0 = full Newton step).
        damping: initial Levenberg-Marquardt damping delta.
        curvature: ``"ggn"`` (default), ``"fisher"`` or ``"hessian"`` (tiny models).
        structure: ``"layer"``, ``"block"`` or ``"full"`` (see :func:`newton.curvature.make_blocks`).
        block_size: largest block.
        kappa_target: if set, raise delta per block until kappa(C_b + delta I) <= kappa_target.
        adapt_damping: Levenberg-Marquardt adaptation of delta.
        line_search: backtracking Armijo search (else the step ``lr p`` is taken as is).
        max_backtracks: halvings tried before falling back.
        max_step_norm: trust radius on ``||t p||``; None = no cap.
        fallback_lr: gradient-step size when the Newton step fails.
        sparsify: prune each dense block with the sparsest PD-safe symmetric mask.
        dense_max: blocks up to this size are formed densely; larger ones are matrix-free (CG).
        kappa_matvecs: Lanczos products for blocks without an exact spectrum.
        min_damping: absolute floor of the Levenberg-Marquardt damping.
        damping_floor: floor of the damping relative to the curvature scale ``s`` (the largest
            curvature seen so far) and the ``B`` examples of the curvature batch:
            ``delta >= damping_floor * s / B``, an isotropic prior worth ``damping_floor``
            examples. Mini-batch Newton steps overfit their batch, and grow without bound once
            the loss is tiny, when delta shrinks too far.
        exact_kappa_below: blocks up to this size get exact ``eigvalsh`` spectra; larger ones Lanczos.
        curvature_batch: examples per micro-batch used for the curvature (the gradient uses all);
            None = all. Forming a dense GGN block costs O(n_b^2 x examples x outputs), so a
            smaller curvature batch is the usual speed knob (Martens 2010).
        method: ``"auto"`` (Hessian-free past ``hessian_free_above`` parameters, blocks below or
            when a ``scheduler``, ``kappa_target`` or ``sparsify`` is given), ``"hessian_free"``
            or ``"blocks"`` (where the scheduler, HHL, kappa targets and sparsification act).
        hessian_free_above: parameter count above which ``"auto"`` takes Hessian-free steps
            (0: at every size; measured faster than blocks on all tasks, docs/newton.md).
        cg_max_iter: Hessian-free CG iterations per step at most (each one GGN product).
        cg_tol: Hessian-free CG stops at a residual of ``cg_tol`` times the gradient's norm.

    The defaults (``damping``, ``damping_floor``, ``cg_tol``, ``hessian_free_above``) were chosen
    by ``benchmarks/bench_newton_defaults.py`` on three tasks; docs/newton.md gives the numbers.
        precondition: Hessian-free diagonal preconditioner ``(v + delta)^(3/4)``, ``v`` a running
            average of squared gradients.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = QNewton(model.parameters())
        >>> opt.requires_closure
        True
    """

    requires_closure = True

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        scheduler: Scheduler | None = None,
        lr: LearningRate = 1.0,
        damping: Damping = 0.3,
        curvature: CurvatureKind = "ggn",
        structure: Structure = "layer",
        block_size: Count = 512,
        kappa_target: KappaTarget | None = None,
        adapt_damping: bool = True,
        line_search: bool = True,
        max_backtracks: NonNegativeCount = 8,
        armijo: Fraction = 1e-4,
        max_step_norm: Positive | None = 10.0,
        fallback_lr: Annotated[float, Interval(ge=0, le=1e3)] = 0.1,
        sparsify: bool = False,
        dense_max: Count = 2048,
        kappa_matvecs: Count = 40,
        curvature_batch: Count | None = None,
        exact_kappa_below: NonNegativeCount = 128,
        min_damping: Annotated[float, Interval(ge=0, le=1e8)] = 1e-8,
        damping_floor: PriorExamples = 2.5,
        method: Method = "auto",
        hessian_free_above: NonNegativeCount = 0,
        cg_max_iter: Count = 10,
        cg_tol: Tolerance = 0.3,
        precondition: bool = True,
    ) -> None:
        check_settings(
            {k: v for k, v in locals().items() if k not in ("self", "params", "__class__")}
        )
        param_list: list[Any] = list(params)
        defaults = {"lr": lr, "damping": damping}
        if not param_list:
            raise BadValueError(
                "QNewton got no parameters (an empty params list, e.g. a model without weights); "
                "pass model.parameters() of a model that has some"
            )
        super().__init__(param_list, defaults)
        if len(self.param_groups) != 1:
            raise NewtonError(
                "QNewton takes one param group (its curvature couples all parameters)"
            )
        if not self._params():
            raise BadValueError(
                "QNewton got parameters, but none requires a gradient (all frozen); unfreeze "
                "the ones to train (requires_grad_(True))"
            )
        self._scheduler_given = scheduler is not None
        self.scheduler = scheduler or Scheduler()
        self.curvature: CurvatureKind = curvature
        self.structure: Structure = structure
        self.block_size = block_size
        self.kappa_target = kappa_target
        self.adapt_damping = adapt_damping
        self.line_search = line_search
        self.max_backtracks = max_backtracks
        self.armijo = armijo
        self.max_step_norm = max_step_norm
        self.fallback_lr = fallback_lr
        self.sparsify = sparsify
        self.dense_max = dense_max
        self.kappa_matvecs = kappa_matvecs
        self.curvature_batch = curvature_batch
        self.exact_kappa_below = exact_kappa_below
        self.min_damping = min_damping
        self.damping_floor = damping_floor
        self.method: Method = method
        self.hessian_free_above = hessian_free_above
        self.cg_max_iter = cg_max_iter
        self.cg_tol = cg_tol
        self.precondition = precondition
        self._output_hessian: dict[int, OutputHessianKind] = {}
        self.history: list[dict[str, Any]] = []  # one record per step (kappa, delta, backends, ...)

    # ------------------------------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        """The parameters QNewton moves: those of the group that require a gradient."""
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    @staticmethod
    def _closure_parts(closure: Any) -> tuple[nn.Module, list[Any], Callable[..., Any]]:
        missing = [k for k in ("model", "batches", "loss_fn") if not hasattr(closure, k)]
        if missing:
            raise NewtonError(
                f"QNewton.step needs a closure with .model, .batches and .loss_fn (missing "
                f"{missing}); use qhybrid.train.train, which passes a qhybrid.train.Closure"
            )
        model = closure.model
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        return model, list(closure.batches), closure.loss_fn

    def _eval_loss(
        self, model: nn.Module, batches: list[Any], loss_fn: Callable[..., Any]
    ) -> float:
        with torch.no_grad():
            total = 0.0
            for b in batches:
                out = loss_fn(model, b)
                total += float(out[0] if isinstance(out, tuple) else out)
        return total / len(batches)

    def _set_theta(self, params: list[torch.Tensor], theta: torch.Tensor) -> None:
        off = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(theta[off : off + n].view_as(p))
                off += n

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One damped Newton step; returns the loss before the step (as the training loop expects)."""
        if closure is None:
            raise NewtonError("QNewton.step needs a closure (the training loop passes one)")
        model, batches, loss_fn = self._closure_parts(closure)
        params = self._params()
        t_start = time.perf_counter()
        loss_t, g_t = self._loss_and_gradient(closure, model, batches, loss_fn, params)
        loss = float(loss_t)
        group = self.param_groups[0]
        lr, delta_lm = float(group["lr"]), float(group["damping"])
        state = self.state[params[0]]
        theta0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()

        # (2)-(3) curvature and the damped solve: one CG on the whole GGN, or dense/CG blocks
        curv = self._curvature(model, batches, loss_fn, params)
        examples = curv.batch_size()
        # this step's damping: LM's, floored for this batch (a short batch gets more damping)
        delta = max(delta_lm, self._damping_floor(state.get("curvature_scale", 0.0), examples))
        if self._use_hessian_free(curv.size):
            direction, quad, block_info, scale = self._hessian_free_direction(curv, g_t, delta)
            kinds = set(curv.output_hessian_kinds())
            if len(kinds) == 1:  # checked once per loss function, then reused
                self._output_hessian[id(loss_fn)] = kinds.pop()
            t_curv = 0.0
        else:
            direction, quad, block_info, t_curv = self._block_direction(curv, g_t, delta)
            scale = max(b["lambda_max"] for b in block_info)
        t_solve = time.perf_counter() - t_start - t_curv

        # (4) safeguards: trust radius, descent check, line search, fallback, rejection
        g = g_t.double().cpu().numpy()
        gp = float(g @ direction)
        t, new_loss, outcome, evals = self._safeguarded_update(
            model, batches, loss_fn, params, theta0, direction, g_t, gp, loss, lr
        )
        # (5) Levenberg-Marquardt, floored relative to the curvature scale
        rho = math.nan
        if outcome == "newton":
            rho = reduction_ratio(loss - new_loss, -(t * gp + 0.5 * t * t * quad))
        floor = self._adapt_damping(delta_lm, scale, examples, rho if outcome == "newton" else -1.0)
        info = {
            "loss": loss,
            "loss_after": new_loss,
            "step_size": t,
            "outcome": outcome,
            "fallback": outcome == "fallback",
            "rejected": outcome == "rejected",
            "rho": rho,
            "line_search_evals": evals,
            "damping": delta,
            "damping_floor": floor,
            "curvature_scale": state["curvature_scale"],
            "quad": quad,
            **_block_summary(block_info),
            "matvecs": curv.matvecs,
            "curvature_s": t_curv,
            "solve_s": t_solve,
            "step_s": time.perf_counter() - t_start,
            "block_info": block_info,
        }
        self.history.append(info)
        return loss_t

    def _curvature(
        self,
        model: nn.Module,
        batches: list[Any],
        loss_fn: Callable[..., Any],
        params: list[torch.Tensor],
    ) -> Curvature:
        """The curvature on the step's batches, or their first ``curvature_batch`` examples."""
        if self.curvature_batch is not None:
            batches = [head_of_batch(b, self.curvature_batch) for b in batches]
        with torch.enable_grad():
            return Curvature(
                model,
                batches,
                loss_fn,
                params,
                kind=self.curvature,
                output_hessian=self._output_hessian.get(id(loss_fn)),
            )

    def _adapt_damping(self, delta_lm: float, scale: float, examples: int, rho: float) -> float:
        """(5) Levenberg-Marquardt on ``rho``, floored: the running curvature scale over the
        largest batch seen (a short last batch gets its extra damping for its own step only).
        Returns the floor."""
        state = self.state[self._params()[0]]
        state["curvature_scale"] = max(state.get("curvature_scale", 0.0), scale)
        state["examples"] = max(state.get("examples", 0), examples)
        floor = self._damping_floor(state["curvature_scale"], state["examples"])
        if self.adapt_damping:
            lm = LevenbergMarquardt(delta=max(delta_lm, floor), min_delta=floor)
            self.param_groups[0]["damping"] = lm.update(rho)
        return floor

    def _loss_and_gradient(
        self,
        closure: Callable[[], Any],
        model: nn.Module,
        batches: list[Any],
        loss_fn: Callable[..., Any],
        params: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1) ``closure()``: the loss and the flat gradient, both checked finite (nothing changed yet)."""
        try:  # a non-scalar loss fails in backward ("grad can be implicitly created only ...")
            with torch.enable_grad():
                loss_t = closure()
        except RuntimeError:
            _check_scalar_loss(model, batches, loss_fn)  # names the loss when it is the cause
            raise
        if not isinstance(loss_t, torch.Tensor) or loss_t.numel() != 1:
            _check_scalar_loss(model, batches, loss_fn)
            raise NewtonError(
                f"the closure returned {type(loss_t).__name__} "
                f"{tuple(getattr(loss_t, 'shape', ()))}; QNewton needs the mean loss as a scalar "
                "tensor (qhybrid.train.Closure returns one)"
            )
        loss = float(loss_t)
        if not math.isfinite(loss):
            raise NonFiniteError(f"loss is {loss}; QNewton refuses to step (weights unchanged)")
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ]
        g_t = torch.cat(grads).detach()
        if not torch.isfinite(g_t).all():
            raise NonFiniteError(
                "the gradient has NaN or infinite entries; QNewton refuses to step (weights "
                "unchanged). Check the data, lower lr, or raise damping"
            )
        return loss_t, g_t

    def _safeguarded_update(
        self,
        model: nn.Module,
        batches: list[Any],
        loss_fn: Callable[..., Any],
        params: list[torch.Tensor],
        theta0: torch.Tensor,
        direction: np.ndarray,
        g_t: torch.Tensor,
        gp: float,
        loss: float,
        lr: float,
    ) -> tuple[float, float, str, int]:
        """Trust radius, Armijo backtracking, gradient fallback, rejection.

        Returns (step size, loss after, outcome, loss evaluations): ``"newton"`` (the line search accepted
        ``t p``), ``"fallback"`` (a gradient step of ``fallback_lr`` that lowered the loss) or
        ``"rejected"`` (neither lowered the loss: the weights are restored, trust-region style).
        """
        pnorm = float(np.linalg.norm(direction))
        t = lr
        if self.max_step_norm is not None and t * pnorm > self.max_step_norm:
            t = self.max_step_norm / pnorm
        p_t = torch.as_tensor(direction, dtype=theta0.dtype, device=theta0.device)
        evals = 0
        if gp < 0 and math.isfinite(gp):
            tries = self.max_backtracks + 1 if self.line_search else 1
            for _ in range(tries):
                self._set_theta(params, theta0 + t * p_t)
                new_loss = self._eval_loss(model, batches, loss_fn)
                evals += 1
                if math.isfinite(new_loss) and (
                    not self.line_search or new_loss <= loss + self.armijo * t * gp
                ):
                    return t, new_loss, "newton", evals
                t *= 0.5
        if self.fallback_lr > 0:
            self._set_theta(params, theta0 - self.fallback_lr * g_t.to(theta0))
            new_loss = self._eval_loss(model, batches, loss_fn)
            evals += 1
            if math.isfinite(new_loss) and new_loss < loss:
                return self.fallback_lr, new_loss, "fallback", evals
        self._set_theta(params, theta0)
        return 0.0, loss, "rejected", evals

    def _damping_floor(self, scale: float, examples: int) -> float:
        """The damping floor (:func:`newton.damping.damping_floor`) for this curvature scale."""
        return damping_floor(scale, examples, self.damping_floor, self.min_damping)

    def _use_hessian_free(self, n_params: int) -> bool:
        """``auto``: Hessian-free past ``hessian_free_above`` parameters, unless a block-only
        feature was asked for (a scheduler, kappa_target, sparsify) or the curvature is indefinite."""
        if self.method == "auto":
            block_only = self._scheduler_given or self.kappa_target is not None or self.sparsify
            return (
                not block_only
                and self.curvature != "hessian"
                and n_params > self.hessian_free_above
            )
        return self.method == "hessian_free"

    def _block_direction(
        self, curv: Curvature, g_t: torch.Tensor, delta_lm: float
    ) -> tuple[np.ndarray, float, list[dict[str, Any]], float]:
        """Block-diagonal damped Newton direction; returns (p, p.(C + delta I)p, records, t_curv)."""
        t0 = time.perf_counter()
        with torch.enable_grad():
            blocks = make_blocks(
                curv.names, curv.numels, structure=self.structure, block_size=self.block_size
            )
            dense_blocks = [b for b in blocks if b.size <= self.dense_max]
            mats = dict(zip(dense_blocks, curv.dense_blocks(dense_blocks), strict=True))
        t_curv = time.perf_counter() - t0
        g = g_t.double().cpu().numpy()
        direction = np.zeros_like(g)
        quad = 0.0
        block_info: list[dict[str, Any]] = []
        for blk in blocks:
            mat = mats.get(blk)
            if mat is not None and not torch.isfinite(mat).all():
                raise self._nonfinite_curvature(delta_lm, f"the curvature block {blk.name}")
            try:
                rec = self._solve_block(curv, blk, mat, g[blk.slice], delta_lm)
            except NonFiniteError as err:
                raise self._nonfinite_curvature(delta_lm, f"block {blk.name}") from err
            direction[blk.slice] = rec.pop("p")
            quad += rec.pop("pAp")
            block_info.append(rec)
        return direction, quad, block_info, t_curv

    def _nonfinite_curvature(self, delta: float, what: str) -> NonFiniteError:
        return NonFiniteError(
            f"{what} is NaN or infinite (curvature={self.curvature!r}, damping={delta:g}) "
            "although the loss and gradient are finite; no weight was changed. The loss's "
            "second derivative overflows at these outputs: check the loss, or use "
            "curvature='fisher'"
        )

    def _hessian_free_direction(
        self, curv: Curvature, g_t: torch.Tensor, delta: float
    ) -> tuple[np.ndarray, float, list[dict[str, Any]], float]:
        """Truncated preconditioned CG on ``(C + delta I) p = -g`` over all parameters.

        Products ``C v`` replay the step's cached linearisation (:meth:`Curvature.matvec`), so a
        product costs about one backward pass of the curvature batch. CG starts from
        ``CG_DECAY`` times the last direction and stops at ``cg_max_iter`` iterations, at
        ``cg_tol`` relative residual, or when the quadratic model stops improving (Martens 2010).
        The preconditioner is ``diag(v + delta)^(3/4)`` with ``v`` a running average of squared
        gradients (Martens uses per-example squares; the running average costs nothing).
        """
        state = self.state[self._params()[0]]  # kept with the optimizer's state_dict
        g = g_t.to(curv.theta)
        sq = state.get("grad_sq")
        sq = g * g if sq is None else EMA_BETA * sq + (1 - EMA_BETA) * g * g
        state["grad_sq"] = sq
        diag = (sq + delta) ** 0.75 if self.precondition else None
        prev = state.get("direction")
        x0 = CG_DECAY * prev if prev is not None and prev.shape == g.shape else None

        def matvec(v: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                return curv.matvec(v).detach() + delta * v

        try:
            x, info = cg_solve(
                matvec,
                -g,
                tol=self.cg_tol,
                maxiter=self.cg_max_iter,
                x0=x0,
                precondition=(lambda r: r / diag) if diag is not None else None,
                truncate=True,
                progress_tol=5e-4,
            )
        except NonFiniteError as err:
            raise self._nonfinite_curvature(delta, "a curvature product") from err
        if not torch.isfinite(x).all():
            raise NonFiniteError("the Hessian-free CG returned NaN/inf; raise the damping")
        state["direction"] = x.detach()
        # phi = p.A p / 2 + g.p at the returned p, so p.A p = 2 (phi - g.p): no extra product
        quad = 2.0 * (float(info.extra["phi"]) - float(g @ x))
        rec = {
            "block": "theta",
            "n": curv.size,
            "kappa": None,
            "kappa_undamped": None,
            "kappa_upper": None,
            "delta": float(delta),
            "d": curv.size,
            "cosine": 1.0,
            "backend": "hessian_free",
            "residual": info.residual,
            "iterations": info.iterations,
            "products": curv.matvecs,
        }
        scale = float(info.extra.get("rayleigh_max", 0.0)) - delta  # undamped curvature
        return x.double().cpu().numpy(), quad, [rec], scale

    def _sparsified(
        self, a_damped: np.ndarray, gb: np.ndarray
    ) -> tuple[np.ndarray, int, float, KappaEstimate]:
        """The sparsest PD-safe symmetric pruning of a damped block (:mod:`newton.sparsity`): the
        pruned block, its row sparsity, the cosine between the pruned and unpruned directions,
        and its own spectrum's estimate (proven again: no PSD premise)."""
        res = sparsify_to_budget(a_damped)
        cos = direction_cosine(a_damped, res.matrix, gb)
        est = estimate_condition_number(
            res.matrix, psd=False, require_pd=False, exact_below=self.dense_max
        )
        return res.matrix, res.d, cos, est

    def _solve_block(
        self, curv: Curvature, blk: Block, mat: torch.Tensor | None, gb: np.ndarray, delta_lm: float
    ) -> dict[str, Any]:
        psd = self.curvature != "hessian"
        # round-off of the products that formed the block (float32 GGN blocks are ~1e-7 relative)
        psd_tol = 1e4 * float(torch.finfo(curv.theta.dtype).eps)
        opts: dict[str, Any] = {"psd": psd, "max_matvecs": self.kappa_matvecs, "require_pd": False}
        if mat is not None:
            a = mat.double().cpu().numpy()
            est = estimate_condition_number(
                a, exact_below=self.exact_kappa_below, psd_tol=psd_tol, **opts
            )
        else:

            def matvec_undamped(v: np.ndarray) -> np.ndarray:
                vt = torch.as_tensor(v, dtype=curv.theta.dtype, device=curv.theta.device)
                with torch.enable_grad():
                    out = curv.block_matvec(blk, vt)
                return out.double().cpu().numpy()

            a = None
            est = estimate_condition_number(matvec_undamped, n=blk.size, psd_tol=psd_tol, **opts)
        lmin = max(est.lambda_min, 0.0) if psd else est.lambda_min
        low0, up0 = est.lambda_min_lower, est.lambda_max_upper  # proven (damping 0), or +-inf
        # kappa_target is met for sure when the proven lambda_max bound sets the damping
        lmax_t = up0 if math.isfinite(up0) else est.lambda_max
        delta = combined_damping(delta_lm, lmax_t, max(lmin, low0), self.kappa_target)
        if not psd and lmin + delta <= 0:  # indefinite Hessian: shift past its lowest eigenvalue
            delta = -lmin + delta_lm
        kappa = min(KAPPA_CAP, (est.lambda_max + delta) / (lmin + delta))
        bound: float | None = None
        lam: tuple[float, float] | None = None
        if math.isfinite(up0) and low0 + delta > 0:
            lam = (low0 + delta, up0 + delta)  # contains the damped block's spectrum: proven
            bound = min(KAPPA_CAP, max(kappa, lam[1] / lam[0]))
        proof = est.proof
        d, cos = blk.size, 1.0
        if a is not None:
            a_damped = a + delta * np.eye(blk.size)
            if self.sparsify:
                a_damped, d, cos, pruned = self._sparsified(a_damped, gb)
                kappa, proof = pruned.kappa, pruned.proof
                bound = pruned.upper_bound if pruned.certified else None
                lam = (
                    (pruned.lambda_min_lower, pruned.lambda_max_upper) if pruned.certified else None
                )
            x, info = self.scheduler.solve(
                a_damped, gb, kappa=kappa, kappa_bound=bound, d=d, lambda_bounds=lam, tag=blk.name
            )
            p_ap = float(x @ (a_damped @ x))
        else:

            def matvec(v: np.ndarray) -> np.ndarray:
                return matvec_undamped(v) + delta * v

            x, info = self.scheduler.solve(
                None, gb, kappa=kappa, kappa_bound=bound, d=d, matvec=matvec, tag=blk.name
            )
            p_ap = float(x @ matvec(x))
        if not np.isfinite(x).all():
            raise NonFiniteError(f"the {info.backend} solve of block {blk.name} returned NaN/inf")
        return {
            "block": blk.name,
            "n": blk.size,
            "kappa": float(kappa),
            "kappa_undamped": float(
                min(KAPPA_CAP, est.lambda_max / max(lmin, est.lambda_max / KAPPA_CAP, 1e-300))
            ),
            "kappa_upper": bound,  # proven upper bound of the solved block, None when unproven
            "lambda_max": float(est.lambda_max),
            "proof": proof,
            "delta": float(delta),
            "d": int(d),
            "cosine": float(cos),
            "backend": info.backend,
            "residual": info.residual,
            "p": -x,
            "pAp": p_ap,
        }
