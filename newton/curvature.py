"""Curvature of a training loss: GGN, empirical Fisher and the exact Hessian, by blocks.

All three are built with :mod:`torch.func` from the same three things the shared training loop's
:class:`~qhybrid.train.Closure` exposes: ``model``, ``batches`` (the step's micro-batches) and
``loss_fn(model, batch)``. The loss is treated as a function of one flat parameter vector
``theta`` (the parameters being optimised, concatenated in order); every other parameter and buffer
stays fixed.

Math (``f`` = network outputs, ``L`` = loss of the outputs, mean over the B examples):
    GGN     G = J^T (d^2 L / d f^2) J            PSD for convex L (cross-entropy, MSE)
    Fisher  F = (1/B) sum_i g_i g_i^T            g_i = per-example gradient (empirical Fisher)
    Hessian H = d^2 L / d theta^2                indefinite in general; tiny models only

Products are matrix-free (``jvp``/``vjp``, forward-over-reverse HVPs); a dense block is formed by
vmapping the product over the block's basis vectors. Blocks are contiguous index ranges of
``theta``: one per parameter tensor (``"layer"``, the Q-Newton layer-wise choice), fixed-size chunks
(``"block"``), or one block for everything (``"full"``); any block larger than ``block_size`` is
split.

The GGN needs the network output separately from the loss. :class:`Curvature` finds it by running
``loss_fn`` once with a recording stand-in for the model; a ``loss_fn`` that calls the model more
than once (or gets a non-tensor output) is rejected with a message that suggests ``"fisher"`` or
``"hessian"``.

References:
    Schraudolph, "Fast curvature matrix-vector products", Neural Computation 2002 (GGN).
    Martens, "New insights and perspectives on the natural gradient method", arXiv 1412.1193.
    Q-Newton, arXiv 2405.00252 (layer-wise blocks).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from newton.errors import NewtonError, NonFiniteError

logger = logging.getLogger(__name__)

__all__ = [
    "Block",
    "Curvature",
    "CurvatureKind",
    "OutputHessianKind",
    "Structure",
    "apply_output_hessian",
    "head_of_batch",
    "make_blocks",
    "output_hessian_kind",
]

CurvatureKind = Literal["ggn", "fisher", "hessian"]
Structure = Literal["layer", "block", "full"]


@dataclass(frozen=True)
class Block:
    """A contiguous range ``[start, stop)`` of the flat parameter vector."""

    start: int
    stop: int
    name: str  # e.g. "0.weight[0:256]"

    @property
    def size(self) -> int:
        """Parameters in the block."""
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        """The block's positions in the flat parameter vector."""
        return slice(self.start, self.stop)


def make_blocks(
    names: Sequence[str], numels: Sequence[int], *, structure: Structure, block_size: int
) -> list[Block]:
    """Partition the flat vector of parameters (given by names and sizes) into blocks.

    Args:
        names: parameter names, in flat order.
        numels: their element counts.
        structure: ``"layer"`` (one block per tensor), ``"block"`` (chunks over the whole vector) or
            ``"full"`` (one block).
        block_size: largest block; larger layer blocks are split into chunks of this size.
    """
    if block_size < 1:
        raise NewtonError(f"block_size={block_size} must be >= 1")
    total = int(sum(numels))
    spans: list[tuple[int, int, str]]
    if structure == "layer":
        spans, off = [], 0
        for name, n in zip(names, numels, strict=True):
            spans.append((off, off + int(n), name))
            off += int(n)
    elif structure == "block":
        spans = [(0, total, "theta")]
    elif structure == "full":
        return [Block(0, total, "theta")]
    else:
        raise NewtonError(f"structure={structure!r} must be 'layer', 'block' or 'full'")
    blocks = []
    for start, stop, name in spans:
        for a in range(start, stop, block_size):
            b = min(stop, a + block_size)
            label = name if (a, b) == (start, stop) else f"{name}[{a - start}:{b - start}]"
            blocks.append(Block(a, b, label))
    return blocks


class _FunctionalModel:
    """Stands in for the model inside ``loss_fn``: calls it with the given parameters."""

    def __init__(self, model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
        self._model = model
        self._params = params

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self._model, dict(self._params), args, kwargs)

    def __getattr__(self, name: str) -> Any:  # model.config etc. still work in loss_fn
        return getattr(self._model, name)


class _Recorder(_FunctionalModel):
    """Records the inputs of the (single) model call inside ``loss_fn``."""

    def __init__(self, model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
        super().__init__(model, params)
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.outputs: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        self.outputs.append(super().__call__(*args, **kwargs))
        return self.outputs[-1]


class _FixedOutput:
    """Returns a given output tensor, so ``loss_fn`` becomes a function of the network output."""

    def __init__(self, output: torch.Tensor, model: nn.Module) -> None:
        self._output = output
        self._model = model

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _loss_only(out: Any) -> torch.Tensor:
    loss = out[0] if isinstance(out, tuple) else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise NewtonError("loss_fn must return a scalar tensor (or a (loss, metrics) tuple)")
    return loss.reshape(())


def _hvp(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """``(d^2 f / d x^2) u`` by reverse-over-reverse. (Forward-over-reverse trips on functions with a
    constant Hessian, e.g. MSE, where autograd hands back an immutable ZeroTensor under vmap.)"""

    def dot(w: torch.Tensor) -> torch.Tensor:
        return (grad(f)(w) * u).sum()

    return grad(dot)(x)


OutputHessianKind = Literal["cross_entropy", "mse", "autodiff"]


def _cross_entropy_hvp(
    z: torch.Tensor, u: torch.Tensor, p: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean softmax cross-entropy over the leading dims: ``H u = (p * u - p (p . u)) / B``.

    ``p = softmax(z)`` may be passed in (it is the same for every product of a step).
    """
    p = torch.softmax(z, dim=-1) if p is None else p
    rows = z.numel() // z.shape[-1]
    return (p * u - p * (p * u).sum(-1, keepdim=True)) / rows


def _mse_hvp(z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries: ``H u = 2 u / numel``."""
    return 2.0 * u / z.numel()


_CLOSED_FORMS: dict[OutputHessianKind, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": _cross_entropy_hvp,
    "mse": _mse_hvp,
}


def output_hessian_kind(
    loss_of_out: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, seed: int = 0
) -> OutputHessianKind:
    """Which closed form equals ``d^2 L / d z^2`` at ``z``: checked, not assumed.

    One autodiff Hessian-vector product of the loss of the outputs (cheap: it never touches the
    network) on a random ``u`` is compared with each closed form; the first that agrees to
    ``1e-5`` relative is used for the whole step, else the autodiff product is.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
    ref = _hvp(loss_of_out, z, u)
    scale = float(ref.norm()) + 1e-30
    for kind, fn in _CLOSED_FORMS.items():
        if z.ndim >= 1 and float((fn(z, u) - ref).norm()) <= 1e-5 * scale:
            return kind
    return "autodiff"


@dataclass(frozen=True)
class _Linearisation:
    """The network linearised at theta on one batch (see :meth:`Curvature._ggn_linearisation`)."""

    z: torch.Tensor  # outputs at theta
    pullback: Callable[[torch.Tensor], torch.Tensor]  # u -> J^T u
    transpose: Callable[[torch.Tensor], torch.Tensor]  # v -> J v
    loss_of_out: Callable[[torch.Tensor], torch.Tensor]
    kind: OutputHessianKind
    softmax: torch.Tensor | None = None  # softmax(z), cached for cross-entropy products


class _Replay:
    """``w -> d(out . w) / d inp``: one backward pass over a recorded graph, kept for reuse."""

    def __init__(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        self.out = out
        self.inp = inp

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(
            self.out, self.inp, w, retain_graph=True, allow_unused=True, materialize_grads=True
        )[0]


def apply_output_hessian(lin: _Linearisation, u: torch.Tensor) -> torch.Tensor:
    """``(d^2 L / d z^2) u`` in closed form, or by autodiff for other losses."""
    if lin.kind == "autodiff":
        return _hvp(lin.loss_of_out, lin.z, u)
    if lin.kind == "cross_entropy":
        return _cross_entropy_hvp(lin.z, u, lin.softmax)
    return _CLOSED_FORMS[lin.kind](lin.z, u)


def _apply_out_hessian(
    loss_of_out: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    cols: torch.Tensor,
    chunk_size: int | None = None,
    max_out: int = 4096,
) -> torch.Tensor:
    """``(d^2 L / d z^2)`` applied to each row of ``cols`` ``(n, *z.shape)``.

    For outputs up to ``max_out`` entries the output Hessian is formed once (cheap: the loss is a
    simple function of z) and multiplied; beyond that, vmapped HVPs keep memory linear.
    """
    kind = output_hessian_kind(loss_of_out, z)
    if kind != "autodiff":
        return _CLOSED_FORMS[kind](z, cols)
    m = z.numel()
    if m <= max_out:
        h = torch.func.hessian(loss_of_out)(z).reshape(m, m)
        flat = cols.reshape(cols.shape[0], m)
        if int((h != 0).sum()) < 0.05 * m * m:
            # per-example losses give a block-diagonal output Hessian: a sparse product is ~100x cheaper
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                return (h.to_sparse_csr() @ flat.T).T.reshape(cols.shape)
        return (flat @ h).reshape(cols.shape)
    return vmap(lambda u: _hvp(loss_of_out, z, u), chunk_size=chunk_size)(cols)


def _unsqueeze_tree(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.unsqueeze(0)
    if isinstance(batch, Mapping):
        return {k: _unsqueeze_tree(v) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_unsqueeze_tree(v) for v in batch)
    return batch


def head_of_batch(batch: Any, k: int) -> Any:
    """The first ``k`` examples of a batch (tensors sliced along dim 0; other leaves kept)."""
    if isinstance(batch, torch.Tensor):
        return batch[:k]
    if isinstance(batch, Mapping):
        return {key: head_of_batch(v, k) for key, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(head_of_batch(v, k) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return _batch_len(batch[0])
    raise NewtonError(f"cannot find the batch size of a {type(batch).__name__} batch")


class Curvature:
    """Curvature of ``mean_b loss_fn(model, batch_b)`` with respect to ``params``.

    Args:
        model: the network.
        batches: the micro-batches the loss averages over (the step's data).
        loss_fn: ``loss_fn(model, batch) -> loss | (loss, metrics)``.
        params: the parameters to differentiate (default: all that require grad), in flat order.
        kind: ``"ggn"`` (default, PSD), ``"fisher"`` (empirical Fisher, PSD) or ``"hessian"``.
        output_hessian: the loss's output Hessian for GGN products, ``"cross_entropy"``,
            ``"mse"`` or ``"autodiff"``; None (default) checks the closed forms on each batch.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> batch = (torch.randn(5, 3), torch.randint(0, 2, (5,)))
        >>> loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])
        >>> curv = Curvature(model, [batch], loss)
        >>> curv.dense().shape
        torch.Size([8, 8])
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Any],
        loss_fn: Callable[[Any, Any], Any],
        params: Sequence[torch.Tensor] | None = None,
        *,
        kind: CurvatureKind = "ggn",
        output_hessian: OutputHessianKind | None = None,
    ) -> None:
        if kind not in ("ggn", "fisher", "hessian"):
            raise NewtonError(f"curvature kind={kind!r} must be 'ggn', 'fisher' or 'hessian'")
        if not batches:
            raise NewtonError("Curvature needs at least one batch")
        self.model = model
        self.batches = list(batches)
        self.loss_fn = loss_fn
        self.kind: CurvatureKind = kind
        named = dict(model.named_parameters())
        chosen: list[tuple[str, torch.Tensor]]
        if params is None:
            chosen = [(n, p) for n, p in named.items() if p.requires_grad]
        else:
            by_id = {id(p): n for n, p in named.items()}
            missing = [i for i, p in enumerate(params) if id(p) not in by_id]
            if missing:
                raise NewtonError(
                    f"parameters at positions {missing} do not belong to the model; pass the "
                    "optimizer's parameters of the same model the closure evaluates"
                )
            chosen = [(by_id[id(p)], p) for p in params]
        self.names = [n for n, _ in chosen]
        self.shapes = [p.shape for _, p in chosen]
        self.numels = [p.numel() for _, p in chosen]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in chosen])
        self.size = int(self.theta.numel())
        self.matvecs = 0  # curvature-vector products done (dense blocks count their columns)
        self._fisher_rows: torch.Tensor | None = None
        self._ggn_parts: list[tuple[Callable[..., Any], Callable[..., Any]]] | None = None
        self._lin: list[_Linearisation] | None = None
        self.output_hessian = output_hessian  # None: found by output_hessian_kind per batch

    # -- the loss as a function of theta --------------------------------------------------------
    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat vector ``theta`` as ``{parameter name: view of its shape}``."""
        out, off = {}, 0
        for name, shape, n in zip(self.names, self.shapes, self.numels, strict=True):
            out[name] = theta[off : off + n].view(shape)
            off += n
        return out

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batches at ``theta`` (differentiable with torch.func)."""
        fm = _FunctionalModel(self.model, self.unflatten(theta))
        losses = [_loss_only(self.loss_fn(fm, b)) for b in self.batches]
        return torch.stack(losses).sum() / len(self.batches)

    def gradient(self) -> torch.Tensor:
        """The flat gradient at ``theta``."""
        g = grad(self.loss)(self.theta)
        if not torch.isfinite(g).all():
            raise NonFiniteError("the gradient has NaN or infinite entries; check data and lr")
        return g

    # -- GGN -------------------------------------------------------------------------------------
    def _record(self, batch: Any, theta: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        """Run ``loss_fn`` once on ``batch`` at ``theta``: the model call's (args, kwargs, output)."""
        rec = _Recorder(self.model, self.unflatten(theta))
        self.loss_fn(rec, batch)
        if len(rec.calls) != 1:
            raise NewtonError(
                f"the GGN needs loss_fn to call the model exactly once per batch, but it called "
                f"it {len(rec.calls)} times; use curvature='fisher' or 'hessian'"
            )
        out = rec.outputs[0]
        if not isinstance(out, torch.Tensor):
            raise NewtonError(
                f"the GGN needs the model to return a tensor, got {type(out).__name__}; "
                "use curvature='fisher' or 'hessian'"
            )
        return rec.calls[0][0], rec.calls[0][1], out

    def _loss_of_out(self, batch: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def loss_of_out(z: torch.Tensor, batch: Any = batch) -> torch.Tensor:
            return _loss_only(self.loss_fn(_FixedOutput(z, self.model), batch))

        return loss_of_out

    def _ggn_setup(self) -> list[tuple[Callable[..., Any], Callable[..., Any]]]:
        """Per batch: (theta -> output, output -> loss)."""
        if self._ggn_parts is not None:
            return self._ggn_parts
        parts = []
        for batch in self.batches:
            with torch.no_grad():
                args, kwargs, _ = self._record(batch, self.theta)

            def out_fn(theta: torch.Tensor, args: Any = args, kwargs: Any = kwargs) -> Any:
                return functional_call(self.model, self.unflatten(theta), args, kwargs)

            parts.append((out_fn, self._loss_of_out(batch)))
        self._ggn_parts = parts
        return parts

    def _ggn_linearisation(self) -> list[_Linearisation]:
        """Per batch, the network linearised once at ``theta`` (cached for the step).

        One forward pass records ``z = f(theta)``; ``J^T u`` replays its backward graph, and
        ``J v`` is the backward of that backward (``u -> J^T u`` is linear, its transpose is
        ``v -> J v``; the "double-vjp" form of a Jacobian-vector product). No product runs the
        forward pass again. The output Hessian is the closed form of :func:`output_hessian_kind`
        when the loss is softmax cross-entropy or MSE.
        """
        if self._lin is not None:
            return self._lin
        lins = []
        theta = self.theta.detach().requires_grad_(True)
        for batch in self.batches:
            with torch.enable_grad():
                _, _, z = self._record(batch, theta)
                u0 = torch.zeros_like(z, requires_grad=True)
                jt_u0 = torch.autograd.grad(
                    z, theta, u0, create_graph=True, allow_unused=True, materialize_grads=True
                )[0]
            loss_of_out = self._loss_of_out(batch)
            zd = z.detach()
            kind = self.output_hessian or output_hessian_kind(loss_of_out, zd)
            probs = torch.softmax(zd, dim=-1) if kind == "cross_entropy" else None
            lins.append(
                _Linearisation(zd, _Replay(z, theta), _Replay(jt_u0, u0), loss_of_out, kind, probs)
            )
        self._lin = lins
        return lins

    def _ggn_mv(self, v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(self.theta)
        for lin in self._ggn_linearisation():
            jv = lin.transpose(v)
            total = total + lin.pullback(apply_output_hessian(lin, jv))
        return total / len(self.batches)

    # -- empirical Fisher ------------------------------------------------------------------------
    def per_example_gradients(self) -> torch.Tensor:
        """``(B_total, P)`` per-example gradients of the loss (one row per example)."""
        if self._fisher_rows is not None:
            return self._fisher_rows

        def single(theta: torch.Tensor, example: Any) -> torch.Tensor:
            fm = _FunctionalModel(self.model, self.unflatten(theta))
            return _loss_only(self.loss_fn(fm, _unsqueeze_tree(example)))

        rows = []
        for batch in self.batches:
            rows.append(vmap(grad(single), in_dims=(None, 0))(self.theta, batch))
        self._fisher_rows = torch.cat(rows).detach()
        return self._fisher_rows

    # -- products and dense blocks ---------------------------------------------------------------
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Curvature times a flat vector ``v`` of size :attr:`size` (undamped)."""
        v = v.to(self.theta)
        self.matvecs += 1
        if self.kind == "ggn":
            return self._ggn_mv(v)
        if self.kind == "fisher":
            g = self.per_example_gradients()
            return g.T @ (g @ v) / g.shape[0]
        return _hvp(self.loss, self.theta, v)

    def block_matvec(self, block: Block, v: torch.Tensor) -> torch.Tensor:
        """The diagonal block ``C[b, b]`` times ``v`` (size ``block.size``), matrix-free."""
        if self.kind == "fisher":
            g = self.per_example_gradients()[:, block.slice]
            self.matvecs += 1
            return g.T @ (g @ v.to(g)) / g.shape[0]
        full = torch.zeros_like(self.theta)
        full[block.slice] = v.to(self.theta)
        return self.matvec(full)[block.slice]

    def dense(self, block: Block | None = None, *, max_elements: int = 2**25) -> torch.Tensor:
        """The dense ``(n, n)`` diagonal block (the whole matrix when ``block`` is None).

        The block's columns are vmapped products; ``max_elements`` caps the size of one vmapped
        chunk of intermediate tensors (``n x outputs``), trading speed for memory.
        """
        block = block or Block(0, self.size, "theta")
        n = block.size
        width = self.size
        if self.kind == "ggn":
            width = max(width, max(int(fn(self.theta).numel()) for fn, _ in self._ggn_setup()))
        # vmap without chunks is ~10x faster; chunk only when one pass would not fit max_elements
        chunk_size = None if n * width <= max_elements else max(1, max_elements // width)
        if self.kind == "fisher":
            g = self.per_example_gradients()[:, block.slice]
            self.matvecs += n
            return g.T @ g / g.shape[0]
        basis = torch.zeros(n, self.size, dtype=self.theta.dtype, device=self.theta.device)
        basis[torch.arange(n), torch.arange(block.start, block.stop)] = 1.0
        self.matvecs += n
        if self.kind == "ggn":
            total = torch.zeros(n, n, dtype=self.theta.dtype, device=self.theta.device)
            for out_fn, loss_of_out in self._ggn_setup():
                z = out_fn(self.theta).detach()

                def jcol(e: torch.Tensor, out_fn: Any = out_fn) -> torch.Tensor:
                    return jvp(out_fn, (self.theta,), (e,))[1]

                jb = vmap(jcol, chunk_size=chunk_size)(basis)  # (n, *out)
                hjb = _apply_out_hessian(loss_of_out, z, jb, chunk_size)  # (n, *out)
                total += jb.reshape(n, -1) @ hjb.reshape(n, -1).T
            mat = total / len(self.batches)
        else:

            def hcol_theta(e: torch.Tensor) -> torch.Tensor:
                return _hvp(self.loss, self.theta, e)

            mat = vmap(hcol_theta, chunk_size=chunk_size)(basis)[:, block.slice]
        mat = 0.5 * (mat + mat.T)  # symmetric up to round-off; make it exactly so
        if not torch.isfinite(mat).all():
            raise NonFiniteError(f"the {self.kind} block {block.name} has NaN or infinite entries")
        return mat

    def dense_blocks(
        self, blocks: Sequence[Block], *, max_elements: int = 2**25
    ) -> list[torch.Tensor]:
        """Dense diagonal blocks; all at once (one vmapped pass over every column) when it fits."""
        if self.kind == "fisher" or len(blocks) <= 1:
            return [self.dense(b, max_elements=max_elements) for b in blocks]
        span = Block(min(b.start for b in blocks), max(b.stop for b in blocks), "span")
        width = self.size
        if self.kind == "ggn":
            width = max(width, max(int(fn(self.theta).numel()) for fn, _ in self._ggn_setup()))
        if span.size * width > max_elements:
            return [self.dense(b, max_elements=max_elements) for b in blocks]
        cols = self._columns(span)  # list over batches of (J cols, H J cols), or the Hessian rows
        out = []
        for b in blocks:
            rows = slice(b.start - span.start, b.stop - span.start)
            if self.kind == "ggn":
                mat = torch.zeros(b.size, b.size, dtype=self.theta.dtype, device=self.theta.device)
                for j, hj in cols:
                    mat += j[rows].reshape(b.size, -1) @ hj[rows].reshape(b.size, -1).T
                mat = mat / len(self.batches)
            else:
                mat = cols[0][0][rows, b.slice]
            out.append(0.5 * (mat + mat.T))  # finiteness is checked by the solvers' input checks
        return out

    def _columns(self, span: Block) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = span.size
        basis = torch.zeros(n, self.size, dtype=self.theta.dtype, device=self.theta.device)
        basis[torch.arange(n), torch.arange(span.start, span.stop)] = 1.0
        self.matvecs += n
        if self.kind == "hessian":
            cols = vmap(lambda e: _hvp(self.loss, self.theta, e))(basis)
            return [(cols, cols)]
        result = []
        for out_fn, loss_of_out in self._ggn_setup():
            z = out_fn(self.theta).detach()
            jb = vmap(lambda e, f=out_fn: jvp(f, (self.theta,), (e,))[1])(basis)
            result.append((jb, _apply_out_hessian(loss_of_out, z, jb)))
        return result

    def output_hessian_kinds(self) -> list[OutputHessianKind]:
        """The output-Hessian form each batch's GGN products use (after the first product)."""
        return [lin.kind for lin in self._lin or []]

    def batch_size(self) -> int:
        """Examples in the curvature batches."""
        return sum(_batch_len(b) for b in self.batches)
