"""Evaluation throughput: batched greedy generation (KV cache, left padding) against one prompt at a time.

The same model, the same problems (test prompts of n = 3..12 in the compact format) and the same
greedy decoding (identical outputs, checked here); problems per second of wall time.

    python benchmarks/bench_llm_generate.py [--size tiny] [--arch llama] [--problems 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llm_sim.data import SplitSpec, TaskFormat, encode_prompt, load_tokenizer, make_splits
from llm_sim.decode import generate_batched, generate_one_by_one
from llm_sim.evaluate import max_new_tokens
from llm_sim.model import build_model, preset
from qhybrid.runs import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--arch", default="llama")
    ap.add_argument(
        "--model", default="", help="a trained save_pretrained folder instead of a fresh model"
    )
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/llm_generate.json")
    args = ap.parse_args()
    tok = load_tokenizer("compact")
    torch.manual_seed(0)
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = build_model(preset(args.size, args.arch), tok)
    splits = make_splits(SplitSpec(train_size=10, test_size=args.problems, ood_n=(7, 8, 10, 12)))
    problems = (splits["test_id"] + splits["test_ood_n"])[: args.problems]
    task = TaskFormat()
    prompts = [encode_prompt(p, tok, task) for p in problems]
    budget = max_new_tokens(problems, task, tok)
    t0 = time.perf_counter()
    batched = generate_batched(
        model, tok, prompts, max_new_tokens=budget, batch_size=args.batch_size
    )
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate_one_by_one(model, tok, prompts, max_new_tokens=budget)
    t_single = time.perf_counter() - t0
    result = {
        "benchmark": "llm_generate_problems_per_s",
        "model": args.model or f"{args.arch}-{args.size} (untrained)",
        "problems": len(problems), "batch_size": args.batch_size, "max_new_tokens": budget,
        "problems_per_s": {"batched": len(problems) / t_batched, "one_at_a_time": len(problems) / t_single},
        "speedup": t_single / t_batched,
        "identical_outputs": batched == single,
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
