"""Mixtral-style subject models: a synthetic multi-domain token task and Python standard-library text.

``task="stdlib"``: a byte-level language model on four text domains of the Python standard library
(code, docstrings, comments, codec tables; :mod:`moe.corpus`), windows of ``seq_len`` bytes, test
windows from held-out modules; scored by next-byte accuracy and perplexity, with per-domain routing
entropy (:func:`routing_entropy`) to show whether experts specialise.

``task="tokens"`` (the fast toy subject for tests):

Four domains with disjoint token ranges, each with its own deterministic rule over Z_V (V = 16), so
different experts learn different rules and routing specialises by domain:

* ``perm``: ``x_{t+1} = π₀(x_t)`` (a fixed random permutation);
* ``fib``:  ``x_{t+1} = x_t + x_{t-1} mod V``;
* ``skip``: ``x_{t+1} = π₂(x_{t-1})`` (a lookup two tokens back);
* ``step``: ``x_{t+1} = x_t + (x_1 − x_0) mod V`` (an arithmetic progression).

A sequence is ``[marker_d, x_0, x_1, ...]``; every token from x_2 on is determined, so
next-token accuracy and perplexity are measured there (``eval_mask``). The model is
``transformers.MixtralForCausalLM`` trained through :func:`qhybrid.train.train` with AdamW and the
load-balancing loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval
from torch import nn

from moe.values import Count, Sequences, SubjectTask, forward_seconds
from qhybrid.config import check_fields
from qhybrid.errors import ConfigError

__all__ = [
    "SubjectConfig",
    "SubjectData",
    "build_subject",
    "calibration",
    "distill_batches",
    "evaluate",
    "generation_quality",
    "greedy_continuations",
    "load_or_train",
    "make_task",
    "per_domain",
    "routing_entropy",
    "train_subject",
]

DOMAINS = ("perm", "fib", "skip", "step")


@dataclass(frozen=True)
class SubjectConfig:
    """The subject model and its task; defaults train in well under a minute on two CPU cores."""

    modulus: Annotated[int, Interval(ge=2, le=1024)] = 16  # V: tokens per domain (values mod V)
    seq_len: Annotated[int, Interval(ge=4, le=4096)] = 24  # tokens per sequence, marker included
    train_sequences: Sequences = 4096  # training set size
    test_sequences: Sequences = 512  # held-out set size
    hidden: Annotated[int, Interval(ge=4, le=65536)] = 64  # model width H
    intermediate: Annotated[int, Interval(ge=4, le=262144)] = 128  # expert hidden width I
    layers: Annotated[int, Interval(ge=1, le=128)] = 2  # decoder layers, each an MoE layer
    experts: Annotated[int, Interval(ge=2, le=1024)] = 8  # routed experts per layer
    top_k: Annotated[int, Interval(ge=1, le=1024)] = 2  # experts per token
    heads: Annotated[int, Interval(ge=1, le=256)] = 4  # attention heads
    steps: Count = 400  # AdamW steps
    batch_size: Count = 32  # sequences per step
    lr: Annotated[float, Interval(gt=0, le=1)] = 3e-3  # AdamW peak learning rate (cosine decay)
    aux_loss_coef: Annotated[float, Interval(ge=0, le=100)] = 0.01  # load-balancing loss weight
    task: SubjectTask = (
        "tokens"  # tokens (synthetic rules, fast) or stdlib (standard-library bytes)
    )

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        if self.top_k > self.experts:
            raise ConfigError(f"top_k={self.top_k} must be <= experts={self.experts}")
        if self.hidden % (2 * self.heads):
            raise ConfigError(
                f"hidden={self.hidden} must be a multiple of 2 x heads={self.heads}: each head's "
                "width must be even (rotary position embeddings rotate pairs)"
            )
        for key in ("hidden", "intermediate"):
            if getattr(self, key) % 4:
                raise ConfigError(
                    f"{key}={getattr(self, key)} must be a multiple of 4: the experts' grouped "
                    "matmul needs rows of a multiple of 16 bytes (fp32)"
                )

    @property
    def vocab(self) -> int:
        """Token ids: 256 bytes (stdlib), else PAD, the domain markers and the domain tokens."""
        if self.task == "stdlib":
            return 256  # UTF-8 bytes
        return 1 + len(DOMAINS) + len(DOMAINS) * self.modulus  # PAD, markers, domain tokens

    def active_parameters(self) -> int:
        """Parameters one token passes through: attention, router, top-k experts, the head."""
        h, i = self.hidden, self.intermediate
        per_layer = 4 * h * h + h * self.experts + self.top_k * 3 * h * i
        return self.layers * per_layer + h * self.vocab

    def work(self) -> tuple[float, float]:
        """Estimated (CPU-core seconds, GB) of training and evaluating the subject
        (:mod:`moe.values`; measured: 250 default steps in 35 s against 31 s estimated)."""
        tokens = self.steps * self.batch_size * self.seq_len
        attention = 4 * self.layers * self.seq_len * self.hidden  # per token: scores and mixing
        active = self.active_parameters() + attention
        seconds = forward_seconds(active, tokens, train=True) + forward_seconds(
            active, self.test_sequences * self.seq_len
        )
        params = self.layers * (
            4 * self.hidden**2 + 3 * self.experts * self.hidden * self.intermediate
        )
        params += 2 * self.hidden * self.vocab
        data = (self.train_sequences + self.test_sequences) * self.seq_len * 8
        width = 8 * self.hidden + 3 * self.top_k * self.intermediate + self.heads * self.seq_len
        activations = 4 * self.batch_size * self.seq_len * self.layers * width * 4
        return seconds, (16 * params + data + activations) / 1e9


@dataclass
class SubjectData:
    """A subject's token ids: training and test sequences, and each test sequence's domain."""

    train: torch.Tensor  # (N, L) token ids
    test: torch.Tensor  # (M, L)
    test_domain: torch.Tensor  # (M,) domain index
    domains: tuple[str, ...] = DOMAINS  # names of the domain indices


def _sequences(
    cfg: SubjectConfig, n: int, rng: np.random.Generator, perms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    v, length = cfg.modulus, cfg.seq_len - 1
    dom = rng.integers(0, len(DOMAINS), n)
    x = np.zeros((n, length), dtype=np.int64)
    x[:, 0] = rng.integers(0, v, n)
    x[:, 1] = np.where(dom == 0, perms[0][x[:, 0]], rng.integers(0, v, n))
    for t in range(1, length - 1):
        nxt = np.where(dom == 0, perms[0][x[:, t]], 0)
        nxt = np.where(dom == 1, (x[:, t] + x[:, t - 1]) % v, nxt)
        nxt = np.where(dom == 2, perms[1][x[:, t - 1]], nxt)
        nxt = np.where(dom == 3, (x[:, t] + x[:, 1] - x[:, 0]) % v, nxt)
        x[:, t + 1] = nxt
    tokens = 1 + len(DOMAINS) + dom[:, None] * v + x
    seq = np.concatenate([1 + dom[:, None], tokens], axis=1)
    return seq, dom


def _stdlib_task(cfg: SubjectConfig, seed: int) -> SubjectData:
    """Random byte windows of every domain: train from train modules, test from held-out modules."""
    from moe import corpus

    rng = np.random.default_rng(seed)
    texts = corpus.domain_texts()
    out: list[list[np.ndarray]] = [[], []]
    doms = []
    for d, name in enumerate(corpus.DOMAINS):
        for split, n in ((0, cfg.train_sequences), (1, cfg.test_sequences)):
            data = np.frombuffer(texts[name][split].encode("utf-8"), dtype=np.uint8)
            k = n // len(corpus.DOMAINS)
            starts = rng.integers(0, len(data) - cfg.seq_len, k)
            out[split].append(
                np.stack([data[s : s + cfg.seq_len] for s in starts]).astype(np.int64)
            )
            if split == 1:
                doms.append(np.full(k, d))
    train = np.concatenate(out[0])[rng.permutation(sum(len(x) for x in out[0]))]
    return SubjectData(
        torch.from_numpy(train),
        torch.from_numpy(np.concatenate(out[1])),
        torch.from_numpy(np.concatenate(doms)),
        corpus.DOMAINS,
    )


def make_task(cfg: SubjectConfig, seed: int = 0) -> SubjectData:
    """Train and test sequences; the rules (permutations) or windows are fixed by ``seed``."""
    if cfg.task == "stdlib":
        return _stdlib_task(cfg, seed)
    if cfg.task != "tokens":
        raise ValueError(f"task={cfg.task!r}; use 'tokens' or 'stdlib'")
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(cfg.modulus) for _ in range(2)])
    train, _ = _sequences(cfg, cfg.train_sequences, rng, perms)
    test, dom = _sequences(cfg, cfg.test_sequences, rng, perms)
    return SubjectData(torch.from_numpy(train), torch.from_numpy(test), torch.from_numpy(dom))


def eval_mask(ids: torch.Tensor) -> torch.Tensor:
    """(N, L) bool: positions whose *next* token is determined (prediction made at t predicts t+1)."""
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 2:] = True
    return mask


def build_subject(cfg: SubjectConfig, seed: int = 0) -> Any:
    """An untrained ``MixtralForCausalLM`` of the configured size."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        num_local_experts=cfg.experts,
        num_experts_per_tok=cfg.top_k,
        max_position_embeddings=cfg.seq_len,
        router_aux_loss_coef=cfg.aux_loss_coef,
        output_router_logits=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    return MixtralForCausalLM(config).float()


def batches_of(ids: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """``{"input_ids", "attention_mask", "labels"}`` batches in order."""
    out = []
    for i in range(0, ids.shape[0], batch_size):
        x = ids[i : i + batch_size]
        out.append({"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x})
    return out


@torch.no_grad()
def evaluate(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 256) -> dict[str, float]:
    """Next-token accuracy and perplexity on the determined positions of ``ids``."""
    model.eval()
    correct, nll, count = 0.0, 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, ids.shape[0], batch_size):
        x = ids[i : i + batch_size].to(device)
        logits = model(input_ids=x).logits[:, :-1].float()
        target = x[:, 1:]
        mask = eval_mask(x)[:, :-1]
        lp = logits.log_softmax(-1)
        nll += float(-lp.gather(-1, target[..., None])[..., 0][mask].sum())
        correct += float((logits.argmax(-1) == target)[mask].sum())
        count += int(mask.sum())
    return {"accuracy": correct / count, "perplexity": math.exp(nll / count)}


@torch.no_grad()
def greedy_continuations(
    model: nn.Module, ids: torch.Tensor, *, prompt: int = 32, new: int = 32, batch_size: int = 128
) -> torch.Tensor:
    """(N, new) greedy continuations of the first ``prompt`` tokens of each row of ``ids``
    (``model.generate`` with the KV cache, no sampling, no early stop)."""
    model.eval()
    out = []
    for i in range(0, ids.shape[0], batch_size):
        x = ids[i : i + batch_size, :prompt]
        gen = model.generate(  # type: ignore[operator]
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
        out.append(gen[:, prompt:])
    return torch.cat(out)


def generation_quality(
    model: nn.Module, ids: torch.Tensor, reference: torch.Tensor, *, prompt: int = 32
) -> dict[str, float]:
    """Free-running generation, the failure REAP (arXiv 2510.13999) attributes to merging: greedy
    continuations of held-out prompts scored by the share of generated tokens equal to the real text
    (``gen accuracy``) and to the uncompressed model's own greedy continuation ``reference``
    (``gen agreement``), and the mean length of the prefix that agrees with it (``gen prefix``)."""
    new = reference.shape[1]
    gen = greedy_continuations(model, ids, prompt=prompt, new=new)
    truth = ids[:, prompt : prompt + new]
    same = gen == reference
    prefix = torch.where(same.all(1), new, (~same).float().argmax(1)).float()
    return {
        "gen accuracy": float((gen[:, : truth.shape[1]] == truth).float().mean()),
        "gen agreement": float(same.float().mean()),
        "gen prefix": float(prefix.mean()),
    }


def train_subject(
    cfg: SubjectConfig,
    seed: int = 0,
    *,
    data: SubjectData | None = None,
    device: str = "cpu",
    metrics_path: Any = None,
) -> tuple[Any, SubjectData, dict[str, float]]:
    """Train the subject through :func:`qhybrid.train.train`; returns (model, data, test metrics)."""
    from qhybrid.train import TrainConfig, make_loader, train

    data = make_task(cfg, seed) if data is None else data
    model = build_subject(cfg, seed)
    model.config.output_router_logits = True  # load-balancing loss during training only
    loader = make_loader(torch.utils.data.TensorDataset(data.train), cfg.batch_size, seed=seed)

    def loss_fn(m: nn.Module, batch: Any) -> Any:
        x = batch[0]
        out = m(input_ids=x, labels=x)
        return out.loss, {"aux": float(out.aux_loss.detach())}

    result = train(
        model,
        loader,
        loss_fn,
        torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0),
        TrainConfig(
            max_steps=cfg.steps,
            lr_schedule="cosine",
            warmup_steps=20,
            log_every=50,
            seed=seed,
            device=device,
            progress=False,
        ),
        metrics_path=metrics_path,
    )
    model.config.output_router_logits = False
    model.eval()
    metrics = evaluate(model, data.test)
    metrics["train_seconds"] = result.wall_time_s
    return model, data, metrics


def calibration(
    data: SubjectData, n: int = 256, batch_size: int = 64
) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` training sequences as calibration batches (no labels)."""
    return calibration_of(data.train[:n], batch_size)


def distill_batches(
    data: SubjectData, n: int, batch_size: int = 32, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """``n`` shuffled training batches for recovery distillation."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.train.shape[0], generator=g)[: n * batch_size]
    return batches_of(data.train[idx], batch_size)


def per_domain(model: nn.Module, data: SubjectData) -> dict[str, float]:
    """Accuracy per domain on the test set."""
    return {
        name: evaluate(model, data.test[data.test_domain == d])["accuracy"]
        for d, name in enumerate(data.domains)
    }


def routing_entropy(model: nn.Module, data: SubjectData) -> dict[str, float]:
    """Per test domain, the entropy of the routers' selection shares ``p_r = counts_r / Σ counts``
    divided by ``log R`` (1 = uniform use of all experts, 0 = one expert), averaged over layers; and
    ``"overlap"``: the mean over layers of ``Σ_r min_d p_r^d`` (the share of routing every domain uses
    alike; 1 = identical routing in every domain)."""
    from moe.stats import collect_routing_stats

    shares: dict[str, list[torch.Tensor]] = {}
    for d, name in enumerate(data.domains):
        ids = data.test[data.test_domain == d]
        stats = collect_routing_stats(model, calibration_of(ids), max_cached_tokens=0)
        shares[name] = [s.counts / s.counts.sum() for s in stats.layers.values()]
    out = {
        name: float(
            torch.stack(
                [-(p * p.clamp_min(1e-30).log()).sum() / math.log(p.numel()) for p in ps]
            ).mean()
        )
        for name, ps in shares.items()
    }
    layers = len(next(iter(shares.values())))
    out["overlap"] = float(
        sum(torch.stack([shares[n][i] for n in shares]).amin(0).sum() for i in range(layers))
        / layers
    )
    return out


def calibration_of(ids: torch.Tensor, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """``ids`` as label-free batches."""
    return [{k: v for k, v in b.items() if k != "labels"} for b in batches_of(ids, batch_size)]


def add_subject_arguments(parser: Any) -> None:
    """The flags the moe benchmarks share to name their subject (see :func:`subject_from_args`)."""
    parser.add_argument("--steps", type=int, default=400, help="subject training steps")
    parser.add_argument(
        "--task",
        default="tokens",
        choices=["tokens", "stdlib"],
        help="subject: the synthetic token task or Python standard-library bytes",
    )
    parser.add_argument("--seq-len", type=int, default=24, help="tokens per sequence")
    parser.add_argument("--train-sequences", type=int, default=4096)
    parser.add_argument("--test-sequences", type=int, default=512)
    parser.add_argument(
        "--cache", default="runs/moe_subjects", help="trained subjects are kept here"
    )


def subject_from_args(args: Any) -> SubjectConfig:
    """The :class:`SubjectConfig` named by :func:`add_subject_arguments`' flags."""
    return SubjectConfig(
        steps=args.steps,
        task=args.task,
        seq_len=args.seq_len,
        train_sequences=args.train_sequences,
        test_sequences=args.test_sequences,
    )


def load_or_train(
    cfg: SubjectConfig, seed: int, cache_dir: str | Any | None = None
) -> tuple[Any, SubjectData, dict[str, float]]:
    """Train the subject for ``seed``, or reload it from ``cache_dir/<hash>-seed<seed>`` when present.

    The cache key covers every config field, so a changed config retrains.
    """
    import dataclasses
    import hashlib
    import json
    from pathlib import Path

    from qhybrid.runs import atomic_write_json

    if cache_dir is None:
        return train_subject(cfg, seed)
    key = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[
        :10
    ]
    folder = Path(cache_dir) / f"subject-{key}-seed{seed}"
    data = make_task(cfg, seed)
    if (folder / "metrics.json").is_file():
        from transformers import MixtralForCausalLM

        model = MixtralForCausalLM.from_pretrained(folder).float().eval()
        return model, data, json.loads((folder / "metrics.json").read_text())
    model, data, metrics = train_subject(cfg, seed, data=data)
    model.save_pretrained(folder)
    atomic_write_json(folder / "metrics.json", metrics)
    return model, data, metrics
