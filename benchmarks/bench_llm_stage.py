"""The reproduce llm stage as `make demo` runs it: quantum -> llm at the quick preset, run twice.

Runs ``qhybrid reproduce --preset quick --set 'stages=["quantum", "llm"]'`` (in-process) ``--runs``
times and records, per run, the llm stage's summary at the unseen n of its dataset (TVD and SA@0.3
at the optimal k beside the p = 1/t rule and the ceiling, |p̂ - p| at a non-optimal k, named set,
set accuracy: :func:`llm_sim.stage.summarise`), its training time and the stage's wall time, and
whether the reruns gave identical numbers (training is deterministic for a given thread count).

    python benchmarks/bench_llm_stage.py [--runs 2] [--out benchmarks/results/llm_stage.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qhybrid.pipeline import reproduce, resolve_reproduce
from qhybrid.runs import write_results

DEPENDS = ("llm_sim", "quantum", "qhybrid/train.py", "qhybrid/pipeline.py")


def one_run(root: Path) -> dict:
    config = resolve_reproduce("quick", overrides=['stages=["quantum", "llm"]'])
    t0 = time.perf_counter()
    result = reproduce(config, root=root, echo=print)
    wall = time.perf_counter() - t0
    llm = next(s for s in result.sections if s.title.startswith("LLM"))
    if llm.status != "ok":
        raise SystemExit(f"the llm stage {llm.status}: {llm.error}")
    evaluation = json.loads((result.run.path / "llm" / "eval.json").read_text())
    training = next(t for t in llm.tables if t[0] == "Training")[1][0]
    return {
        "run": str(result.run.path),
        "summary": evaluation["summary"],
        "train_seconds": training["seconds"],
        "stage_seconds": llm.seconds,
        "wall_seconds": wall,
        "headline": llm.headline,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--root", default="runs")
    ap.add_argument("--out", default="benchmarks/results/llm_stage.json")
    args = ap.parse_args()
    runs = [one_run(Path(args.root)) for _ in range(args.runs)]
    result = {
        "benchmark": "llm_stage",
        "runs": runs,
        "identical_on_rerun": all(r["summary"] == runs[0]["summary"] for r in runs),
        "torch_threads": torch.get_num_threads(),
    }
    write_results(args.out, result, depends=DEPENDS)
    print(
        json.dumps({k: result[k] for k in ("identical_on_rerun",)} | runs[0]["summary"], indent=1)
    )


if __name__ == "__main__":
    main()
