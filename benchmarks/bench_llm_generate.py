"""Evaluation throughput: our batched greedy loop (KV cache, left padding, coupled position ids)
against the same loop one prompt at a time, and transformers' batched ``generate`` (which can only
number positions consecutively, so its outputs differ; its speed is the reference).

The same model and problems (test prompts of n = 2..12 in the compact format); problems per second
of wall time.

    python benchmarks/bench_llm_generate.py [--size tiny] [--arch llama] [--problems 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llm_sim.data import TaskFormat, encode_prompt
from llm_sim.decode import generate_batched, generate_one_by_one
from llm_sim.evaluate import max_new_tokens
from llm_sim.model import build_model, preset
from qhybrid.runs import write_results
from quantum import build_tokenizer
from quantum.dataset import DatasetSpec, SplitSpec, draw_splits


@torch.no_grad()
def _transformers_generate(model, tok, prompts, budget: int, batch_size: int) -> tuple[float, int]:
    """Seconds and decode steps of ``model.generate`` (greedy, KV cache, left padding, sequential
    positions). Its outputs differ from ours (other position ids), so it may stop at another step:
    the fair unit is the batch decode step."""
    steps = 0
    t0 = time.perf_counter()
    order = sorted(prompts, key=lambda e: len(e.input_ids))
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, width - len(r.input_ids) :] = torch.tensor(r.input_ids)
            mask[b, width - len(r.input_ids) :] = 1
        seqs = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        steps += seqs.shape[1] - width
    return time.perf_counter() - t0, steps


def _our_steps(tok, outputs: list[str], budget: int, batch_size: int, prompts) -> int:
    """Decode steps our loop ran: per batch (sorted by prompt length, as it batches), the longest
    answer plus its eos, capped by the budget."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
    lengths = [len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs]
    return sum(
        min(budget, max(lengths[i] for i in order[b : b + batch_size]))
        for b in range(0, len(order), batch_size)
    )


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
    tok = build_tokenizer()
    torch.manual_seed(0)
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        model = build_model(preset(args.size, args.arch), tok)
    half = args.problems // 2
    spec = DatasetSpec(
        train=SplitSpec(2, 6, 1, 3, 100),
        test_id=SplitSpec(2, 6, 1, 3, half),
        test_ood_n=SplitSpec(7, 12, 1, 3, args.problems - half),
    )
    splits = draw_splits(spec)
    problems = splits["test_id"] + splits["test_ood_n"]
    task = TaskFormat()
    prompts = [encode_prompt(p, tok, task) for p in problems]
    budget = max(max_new_tokens(problems, task, tok))  # one budget: transformers takes one
    t0 = time.perf_counter()
    batched = generate_batched(
        model, tok, prompts, task.positions, max_new_tokens=budget, batch_size=args.batch_size
    )
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate_one_by_one(model, tok, prompts, task.positions, max_new_tokens=budget)
    t_single = time.perf_counter() - t0
    t_hf, steps_hf = _transformers_generate(model, tok, prompts, budget, args.batch_size)
    steps_ours = _our_steps(tok, batched, budget, args.batch_size, prompts)
    result = {
        "benchmark": "llm_generate_problems_per_s",
        "model": args.model or f"{args.arch}-{args.size} (untrained)",
        "problems": len(problems),
        "batch_size": args.batch_size,
        "max_new_tokens": budget,
        "problems_per_s": {
            "batched": len(problems) / t_batched,
            "one_at_a_time": len(problems) / t_single,
            "transformers_generate_batched": len(problems) / t_hf,
        },
        "speedup": t_single / t_batched,
        "vs_transformers_generate": t_hf / t_batched,
        "decode_steps": {"batched": steps_ours, "transformers_generate_batched": steps_hf},
        "batch_steps_per_s": {
            "batched": steps_ours / t_batched,
            "transformers_generate_batched": steps_hf / t_hf,
        },
        "per_step_vs_transformers_generate": (steps_ours / t_batched) / (steps_hf / t_hf),
        "identical_outputs": batched == single,
        "torch_threads": torch.get_num_threads(),
    }
    write_results(Path(args.out), result, depends=("llm_sim", "quantum"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
