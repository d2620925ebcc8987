"""Peak memory of the passes on a checkpoint loaded whole vs offloaded to disk by accelerate.

Builds a randomly initialised Mixtral checkpoint (``--layers`` layers, 8 experts, H = ``--hidden``,
I = ``--intermediate``), saves it, then runs in a fresh process per mode: load (``load_moe_checkpoint``,
whole, or with ``device_map="auto"`` and ``max_memory={"cpu": ...}`` so every module is offloaded to
disk), collect routing statistics on 8 byte-level sequences of the standard-library corpus, then one
pass (drop 8 -> 6, merge 8 -> 4, or packed 3-bit quantisation), per mode and pass, together with the checkpoint's size on disk. Measured per child process from ``/proc/self/status``: the
peak RSS while loading and through one warm-up forward, the RSS after them, and — after resetting the
peak (``clear_refs``) — the peak RSS of statistics plus the pass above that RSS.

    python -m benchmarks.bench_moe_offload
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qhybrid.runs import atomic_write_json, environment_info


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _hwm() -> int:
    """Peak resident set size of this process (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def child(folder: str, mode: str, pass_name: str) -> dict[str, Any]:
    import torch
    import transformers

    from moe.calibration import calibration_texts, text_batches
    from moe.checkpoint import load_moe_checkpoint
    from moe.drop import drop_experts
    from moe.merge import merge_experts
    from moe.quantize import quantize_experts
    from moe.stats import collect_routing_stats

    torch.set_num_threads(1)
    texts = calibration_texts("builtin", max_chars=50_000)
    transformers.MixtralForCausalLM(
        transformers.MixtralConfig(
            hidden_size=8,
            intermediate_size=8,
            vocab_size=8,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
        )
    )  # warm the lazy imports
    base = _rss()
    t0 = time.perf_counter()
    kw: dict[str, Any] = {}
    if mode == "disk offload":
        kw = {
            "device_map": "auto",
            "max_memory": {"cpu": "1MB"},
            "offload_folder": folder + "-offload",
        }
    model = load_moe_checkpoint(folder, **kw)
    load_peak = _hwm() - base
    batches, _ = text_batches(model, texts, sequences=8, seq_len=64)
    with torch.no_grad():
        model(**batches[0])  # one warm-up forward: first-call allocations are not the pass's
    first_forward = _hwm() - base
    after_load = _rss()
    _reset_hwm()  # the pass's own peak from here
    stats = collect_routing_stats(model, batches, max_cached_tokens=512)
    if pass_name == "drop 8->6":
        drop_experts(model, stats, num_experts=6)
    elif pass_name == "merge 8->4":
        merge_experts(model, stats, num_experts=4)
    else:
        quantize_experts(model, stats, avg_bits=3.0, allocation="uniform")
    return {
        "mode": mode,
        "pass": pass_name,
        "load peak MB": load_peak / 2**20,
        "peak through a first forward MB": first_forward / 2**20,
        "resident after load MB": (after_load - base) / 2**20,
        "pass peak MB above the loaded model": (_hwm() - after_load) / 2**20,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results/moe_offload.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from moe.tiny import tiny_moe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "ckpt")
        tiny_moe(
            "mixtral",
            hidden=args.hidden,
            intermediate=args.intermediate,
            layers=args.layers,
            vocab=256,
        ).save_pretrained(folder)
        disk = os.path.getsize(Path(folder) / "model.safetensors")
        for pass_name in ("drop 8->6", "merge 8->4", "quant 3 bits packed"):
            for mode in ("whole", "disk offload"):
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_moe_offload",
                    "--child",
                    folder,
                    mode,
                    pass_name,
                ]
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    atomic_write_json(
        Path(args.out),
        {
            "command": f"python -m benchmarks.bench_moe_offload --layers {args.layers} --hidden {args.hidden} "
            f"--intermediate {args.intermediate}",
            "checkpoint MB on disk": disk / 2**20,
            "rows": rows,
            "note": "MB above the RSS after imports and a warm-up model (VmRSS / VmHWM); memory-mapped checkpoint pages count",
            "env": environment_info(seed=0),
        },
    )


if __name__ == "__main__":
    main()
