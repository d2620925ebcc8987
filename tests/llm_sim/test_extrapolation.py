"""Regression guard: a tiny coupled model trained on n <= 6 copies the marked set exactly at unseen n.

If a change to the tokenizer, the renderings, the position ids, the packing or the training loop
breaks length generalisation, this fails in CI (about 80 s on one thread) instead of in the next
benchmark run. The model is small and short-trained, so the test checks copying only (the number
is the benchmark's business: ``benchmarks/bench_llm_targets.py``): every answer must start with
exactly the marked states' blocks, in order.

Sized by measurement (36 problems at n = 7, 8, 9, 10, 12, 16, training seeds 0 / 1 / 2): d = 64,
600 steps copied wrong in 6 / 0 / 0 problems up to n = 11 and 18 / 11 / 10 of 30 at n = 8-24 (the
second and third blocks drift), too close to the edge to guard anything (CI's CPU gave a different
result from ours); d = 96, 800 steps: 0 / 1 / 1 of 36, the misses only at n = 16. The test asserts
n = 8, 10, 12 with seed 0.
"""

from __future__ import annotations

import random

import torch

from llm_sim.data import TaskFormat
from llm_sim.evaluate import evaluate_model
from llm_sim.model import ModelConfig
from llm_sim.training import LLMTrainConfig, train_model
from quantum import GroverProblem
from quantum.dataset import DatasetSpec, SplitSpec, draw_splits

SPEC = DatasetSpec(
    renderings=("compact",),
    oracle_styles=("x_mcz_x",),
    train=SplitSpec(2, 6, 1, 3, 2000, off_optimal=0.5, k_draw="uniform"),
    test_id=SplitSpec(2, 6, 1, 3, 20),
    test_ood_n=SplitSpec(7, 8, 1, 1, 2),
    test_ood_t=SplitSpec(5, 6, 4, 4, 2),
    test_ood_k=SplitSpec(2, 6, 1, 2, 2, off_optimal=1.0),
)
CONFIG = LLMTrainConfig(
    model=ModelConfig(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=384),
    steps=800,
    batch_size=32,
    lr=3e-3,
    device="cpu",
    task=TaskFormat(fmt="compact_scaled"),
    checkpoint_every=0,
    log_every=100,
)


def _problems(n: int, rng: random.Random) -> list[GroverProblem]:
    return [
        GroverProblem(n, sorted({format(rng.getrandbits(n), f"0{n}b") for _ in range(t)}))
        for t in (1, 2, 3, 1, 2, 3)
    ]


def test_tiny_coupled_model_copies_the_marked_set_at_unseen_n(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the run is a function of the thread count; pin it
    try:
        trained = train_model(CONFIG, tmp_path, seed=0, splits=draw_splits(SPEC), progress=False)
        rng = random.Random(5)
        for n in (8, 10, 12):
            problems = _problems(n, rng)
            records = evaluate_model(trained.model, trained.tokenizer, CONFIG.task, problems)
            for p, r in zip(problems, records, strict=True):
                copy = " ".join(f"marked {' '.join(s)}" for s in p.marked)
                assert " ".join(r["text"].split()).startswith(copy), (n, copy, r["text"][:200])
    finally:
        torch.set_num_threads(threads)
