"""Accuracy under insider attack: Byzantine clients with valid keys, FedAvg vs robust strategies.

Signatures stop outsiders; a client with a valid key is stopped only by the server policy
(integrity attacks: double submission, non-finite or huge values, inflated example counts, extra
tensors, each rejected with its reason code) or, for updates that are well-formed but malicious
(scaled or sign-flipped updates, label-flip data poisoning), limited by a robust aggregation rule
inside :class:`~pqc_fl.strategy.VerifyingStrategy`: coordinate-wise median and trimmed mean
(Yin et al., arXiv 1803.01498), Krum / Multi-Krum (Blanchard et al., arXiv 1703.02757).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pqc_fl.attacks import INTEGRITY_ATTACKS, ByzantineAttack
from pqc_fl.config import FLConfig, LocalTrainConfig, StrategyName

__all__ = ["EXPECTED_REASON", "accuracy_under_attack", "integrity_runs"]

EXPECTED_REASON = {
    "double_submission": "duplicate_submission",
    "non_finite": "non_finite",
    "huge_values": "out_of_range",
    "inflate_examples": "examples_over_cap",
    "extra_tensor": "schema_mismatch",
}


def _run(cfg: FLConfig) -> Any:
    from pqc_fl.simulate import run_inprocess

    logging.getLogger("pqc_fl.server").setLevel(logging.ERROR)  # rejections are counted instead
    logging.getLogger("flwr").setLevel(logging.WARNING)
    return run_inprocess(cfg)


def integrity_runs(base: FLConfig, fraction: float = 0.2) -> list[dict[str, Any]]:
    """One run per integrity attack: every Byzantine update rejected with its expected reason?"""
    k = round(fraction * base.num_clients)
    clean = _run(base)
    rows = []
    for attack in INTEGRITY_ATTACKS:
        r = _run(replace(base, byzantine=attack, num_byzantine=k))
        sent = k * base.rounds * (2 if attack == "double_submission" else 1)
        reasons = sorted({x["reason"] for x in r.rejections})
        rows.append(
            {
                "attack": attack,
                "byzantine": k,
                "byzantine_updates": sent,
                "rejected": len(r.rejections),
                "reasons": ",".join(reasons),
                "expected": EXPECTED_REASON[attack],
                "all_rejected_as_expected": len(r.rejections) == sent
                and reasons == [EXPECTED_REASON[attack]],
                "honest_rejected": sum(
                    x["node"]
                    not in {f"node-{i}" for i in range(base.num_clients - k, base.num_clients)}
                    for x in r.rejections
                ),
                "final_acc": r.final_accuracy,
                "attack_free_acc": clean.final_accuracy,
            }
        )
    return rows


def accuracy_under_attack(
    base: FLConfig,
    strategies: Sequence[StrategyName],
    attacks: Sequence[ByzantineAttack],
    fractions: Sequence[float],
    seeds: Sequence[int] = (0,),
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Final test accuracy for each (strategy, attack, Byzantine fraction, seed); attack "none"
    at fraction 0 is the attack-free reference of each strategy."""
    rows = []
    grid: list[tuple[StrategyName, ByzantineAttack, float]] = [(s, "none", 0.0) for s in strategies]
    grid += [(s, a, f) for a in attacks for f in fractions for s in strategies]
    for strategy, attack, frac in grid:
        for seed in seeds:
            k = round(frac * base.num_clients)
            cfg = replace(base, strategy=strategy, byzantine=attack, num_byzantine=k, seed=seed)
            r = _run(cfg)
            row = {
                "strategy": strategy,
                "attack": attack,
                "fraction": frac,
                "byzantine": k,
                "seed": seed,
                "final_acc": r.final_accuracy,
                "rejected": len(r.rejections),
            }
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


DEFAULT_BASE = FLConfig(num_clients=10, rounds=10, local=LocalTrainConfig(steps=20))
