"""Reproduce stage ``fl``: post-quantum signed federated learning on digits.

1. Primitive table: keygen / sign / verify (median and IQR) of ML-DSA, Falcon, SLH-DSA and the
   classical baselines on a 32-byte digest and on a 1 MiB message.
2. Federated runs, 3 clients: the MLP with and without signing on the in-process engine (weights
   must be bitwise identical), and on Flower's simulation engine (Ray) with one client flipping a
   weight bit after signing (rejected every round; the final model must equal the in-process
   engine's for the same run).
3. Share of round time spent on hashing and on signatures for three model sizes (4.8 k, 40 k and
   9.7 M parameters) with 2 and 10 clients, ML-DSA-44 on digests.
4. The attack suite: every case rejected with its reason code, no honest update rejected.
5. Insider attacks (Byzantine clients with valid keys, 10 clients): integrity attacks rejected
   with their reason codes; accuracy under sign-flipped updates at 20% with FedAvg beside the
   robust strategies inside the verifying wrapper (the full grid is
   benchmarks/bench_pqc_fl_byzantine.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Gt

from qhybrid.config import check_fields
from qhybrid.errors import QHybridError
from qhybrid.report import Section
from qhybrid.runs import Run, atomic_write_json

TITLE = "PQC-signed federated learning (ML-DSA / Falcon / SLH-DSA)"


@dataclass(frozen=True)
class StageConfig:
    schemes: tuple[str, ...] = (
        "ml-dsa-44",
        "ml-dsa-65",
        "ml-dsa-87",
        "falcon-512",
        "falcon-1024",
        "slh-dsa-sha2-128f",
        "slh-dsa-shake-128f",
        "ed25519",
        "ecdsa-p256",
        "rsa-3072",
        "ed25519+ml-dsa-44",
    )  # primitive-table schemes (the slow SLH-DSA "s" sets are in the benchmark)
    budget_s: Annotated[float, Gt(0)] = 0.05  # seconds per primitive-table cell (at least 3 calls)
    fl_rounds: Annotated[int, Ge(1)] = 5  # federated rounds of the accuracy runs
    fl_model: str = "mlp"  # model of the accuracy runs
    engine: str = "flower"  # engine of the tampering-client run: "flower" (Ray) or "inprocess"
    cost_models: tuple[str, ...] = ("mlp", "cnn", "mlp-10m")  # round-cost models
    cost_clients: tuple[Annotated[int, Ge(1)], ...] = (
        2,
        10,
    )  # round-cost client counts (100 in the benchmark)
    local_steps: Annotated[int, Ge(1)] = (
        20  # local steps per round (accuracy runs and round-cost model)
    )
    honest_updates: Annotated[int, Ge(1)] = (
        300  # honest updates in the attack suite (10,000 in the benchmark)
    )
    byz_rounds: Annotated[int, Ge(1)] = 5  # rounds of the insider-attack runs (10 clients)
    byz_strategies: tuple[str, ...] = ("fedavg", "fedmedian", "krum")  # accuracy under attack
    byz_attack: str = "sign_flip"  # the model-poisoning attack of the stage (20% Byzantine)

    def __post_init__(self) -> None:
        from pqc_fl.attacks import BYZANTINE_ATTACKS
        from pqc_fl.config import MODELS, STRATEGIES
        from pqc_fl.schemes import SCHEME_NAMES

        check_fields(self)
        if self.engine not in ("flower", "inprocess"):
            raise QHybridError(f"engine={self.engine!r} must be 'flower' or 'inprocess'")
        for key, values, known in (
            ("schemes", self.schemes, SCHEME_NAMES),
            ("fl_model", (self.fl_model,), MODELS),
            ("cost_models", self.cost_models, MODELS),
            ("byz_strategies", self.byz_strategies, STRATEGIES),
            ("byz_attack", (self.byz_attack,), BYZANTINE_ATTACKS),
        ):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise QHybridError(f"{key}: unknown {unknown}; use some of {sorted(known)}")


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pqc_fl import bench
    from pqc_fl.attacks import run_attack_suite
    from pqc_fl.config import FLConfig, LocalTrainConfig
    from pqc_fl.simulate import run_inprocess

    out: dict[str, Any] = {"hardware": bench.hardware()}
    # 1. primitives
    prims = bench.primitive_table(list(config.schemes), budget_s=config.budget_s, all_backends=True)
    out["primitives"] = prims
    # 2. federated runs: signed == unsigned, and a tampering client
    local = LocalTrainConfig(steps=config.local_steps)
    base = dict(model=config.fl_model, rounds=config.fl_rounds, local=local, seed=seed)
    signed = run_inprocess(FLConfig(**base))  # type: ignore[arg-type]
    plain = run_inprocess(FLConfig(sign=False, **base))  # type: ignore[arg-type]
    attacked_cfg = FLConfig(attack="tensor_bitflip", attacker=1, **base)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    attacked = run_inprocess(attacked_cfg)
    inprocess_s = time.perf_counter() - t0
    identical = all(np.array_equal(signed.state[k], plain.state[k]) for k in plain.state)
    out["fl"] = {
        "signed": signed.rounds,
        "unsigned": plain.rounds,
        "attacked": attacked.rounds,
        "rejections": attacked.rejections,
        "identical_weights": identical,
    }
    flower = None
    if config.engine == "flower":
        flower = _flower_run(attacked_cfg, attacked.state)
        out["fl"]["flower"] = {**flower, "inprocess_seconds": inprocess_s}
    attacked_rounds = flower["rounds"] if flower else attacked.rounds
    rejections = flower["rejections"] if flower else attacked.rejections
    # 3. round-time shares
    costs = bench.round_cost_table(
        config.cost_models, config.cost_clients, local_steps=config.local_steps, seed=seed
    )
    out["round_costs"] = costs
    # 4. attack suite
    suite = run_attack_suite("ml-dsa-44", "digest", honest=config.honest_updates, seed=seed)
    out["attacks"] = suite
    # 5. insider attacks
    from dataclasses import replace

    from pqc_fl.byzantine import DEFAULT_BASE, accuracy_under_attack, integrity_runs

    byz_base = replace(DEFAULT_BASE, rounds=config.byz_rounds, seed=seed)
    integrity = integrity_runs(byz_base)
    byz = accuracy_under_attack(byz_base, config.byz_strategies, (config.byz_attack,), (0.2,))
    out["insider"] = {"integrity": integrity, "accuracy": byz}
    atomic_write_json(run.artefact("fl", "stage.json"), out)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    rounds = [r["round"] for r in signed.rounds]
    ax[0].plot(rounds, [r["test_acc"] for r in plain.rounds], "o-", label="unsigned")
    ax[0].plot(rounds, [r["test_acc"] for r in signed.rounds], "x--", label="signed (ML-DSA-44)")
    ax[0].plot(
        rounds,
        [r["test_acc"] for r in attacked_rounds],
        "s:",
        label=f"1 tampering client ({config.engine} engine)",
    )
    ax[0].set(xlabel="round", ylabel="test accuracy", title="FedAvg on digits, 3 clients")
    ax[0].legend()
    labels = [f"{c['model']}\nN={c['clients']}" for c in costs]
    x = np.arange(len(costs))
    ax[1].bar(x - 0.2, [c["sign_verify_share_pct"] for c in costs], 0.4, label="sign + verify")
    ax[1].bar(x + 0.2, [c["hash_share_pct"] for c in costs], 0.4, label="hashing (SHA-256)")
    ax[1].set(xticks=x, ylabel="% of round time", yscale="log", title="crypto share, ML-DSA-44")
    ax[1].set_xticklabels(labels, fontsize=7)
    ax[1].legend()
    fig.tight_layout()

    ten_m = [c for c in costs if c["model"] == "mlp-10m"]
    worst = max((c["sign_verify_share_pct"] for c in ten_m), default=float("nan"))
    section = Section(
        TITLE,
        text=(
            f"Signing leaves training unchanged: final accuracy {signed.final_accuracy:.4f} signed "
            f"vs {plain.final_accuracy:.4f} unsigned, weights bitwise identical: **{identical}**. "
            f"A client flipping one weight bit after signing was rejected in "
            f"{len(rejections)}/{config.fl_rounds} rounds "
            f"({', '.join(sorted({r['reason'] for r in rejections}))}) on the {config.engine} "
            "engine"
            + (
                f" (Flower simulation engine with Ray: {flower['seconds']:.1f} s vs "
                f"{inprocess_s:.1f} s in-process; final weights equal to the in-process "
                f"engine's to float32 rounding: **{flower['matches_inprocess']}**)"
                if flower
                else ""
            )
            + ". "
            f"With ML-DSA-44 on digests, signing + verification take at most {worst:.3g}% of a "
            f"round for the 9.7 M-parameter model (target < 1%). Attack suite: "
            f"{suite['rejection_rate']:.0%} of {len(suite['cases'])} cases rejected with the "
            f"expected reason, {suite['false_rejections']} false rejections of "
            f"{suite['honest']} honest updates. Hardware: {out['hardware']['cpu']}, "
            f"{out['hardware']['cores']} cores, load average {out['hardware']['load_avg_1min'] or 0:.1f}. "
            "Other runs use the deterministic in-process engine with the same server code "
            "(RoundVerifier and Flower's strategies)."
        ),
    )
    section.headline = (
        f"signed == unsigned weights: {identical}; tampered updates rejected "
        f"{len(rejections)}/{config.fl_rounds}; attack suite {suite['rejection_rate']:.0%} rejected; "
        f"sign + verify <= {worst:.2g}% of a 9.7M-parameter round"
    )
    section.add_table(
        "Signature primitives: median [interquartile range]",
        [
            {k: v for k, v in r.items() if k not in ("pq",)}
            for r in bench.primitive_markdown_rows(prims)
        ],
    )
    section.add_table(
        "Share of round time (client train + digest + sign, then server parse + verify + hash + "
        "aggregate of N updates)",
        [
            {
                "model": c["model"],
                "params": c["params"],
                "clients": c["clients"],
                "train s": c["client_train_s"],
                "sign ms": 1e3 * c["client_sign_s"],
                "digest ms": 1e3 * c["client_digest_s"],
                "server verify ms": 1e3 * c["server_verify_s"],
                "server hash ms": 1e3 * c["server_hash_s"],
                "sign+verify %": c["sign_verify_share_pct"],
                "hash %": c["hash_share_pct"],
            }
            for c in costs
        ],
    )
    section.add_table(
        "Attack suite (ML-DSA-44, digest mode)",
        [{k: c[k] for k in ("attack", "expected", "got", "as_expected")} for c in suite["cases"]],
    )
    section.add_table(
        "Insider integrity attacks: 2 of 10 clients with valid keys (every update refused?)",
        [
            {
                k: r[k]
                for k in (
                    "attack",
                    "byzantine_updates",
                    "rejected",
                    "reasons",
                    "all_rejected_as_expected",
                    "honest_rejected",
                    "final_acc",
                    "attack_free_acc",
                )
            }
            for r in integrity
        ],
    )
    section.add_table(
        f"Accuracy under attack: {config.byz_attack} updates from 2 of 10 clients "
        f"({config.byz_rounds} rounds); 'none' is each strategy's attack-free run",
        [
            {k: r[k] for k in ("strategy", "attack", "byzantine", "final_acc", "rejected")}
            for r in byz
        ],
    )
    section.add_figure(
        "Accuracy with and without signing; crypto share of round time",
        run.save_figure(fig, "figures/pqc_fl_overview"),
    )
    fig2, ax2 = plt.subplots(figsize=(5.5, 3.2))
    names = list(config.byz_strategies)
    x2 = np.arange(len(names))
    for off, attack, label in (
        (-0.2, "none", "attack-free"),
        (0.2, config.byz_attack, f"{config.byz_attack}, 2 of 10 clients"),
    ):
        ax2.bar(
            x2 + off,
            [
                next(r["final_acc"] for r in byz if r["strategy"] == s and r["attack"] == attack)
                for s in names
            ],
            0.4,
            label=label,
        )
    ax2.set(
        xticks=x2,
        ylabel="final test accuracy",
        ylim=(0, 1),
        title="Byzantine insiders with valid keys (digits)",
    )
    ax2.set_xticklabels(names)
    ax2.legend(fontsize=7)
    fig2.tight_layout()
    section.add_figure(
        "Accuracy under attack: FedAvg beside robust strategies inside the verifying wrapper",
        run.save_figure(fig2, "figures/pqc_fl_byzantine"),
    )
    context["fl"] = {"identical_weights": identical, "rejection_rate": suite["rejection_rate"]}
    insider_ok = all(r["all_rejected_as_expected"] and not r["honest_rejected"] for r in integrity)
    context["fl"]["insider_integrity_ok"] = insider_ok
    if (
        not identical
        or suite["rejection_rate"] < 1.0
        or suite["false_rejections"]
        or not insider_ok
        or (flower is not None and not flower["matches_inprocess"])
    ):
        section.status = "failed"
        section.error = (
            "signing changed training, an attack was not rejected as expected, or the Flower "
            "engine's model differs from the in-process engine's"
        )
    return section


def _flower_run(cfg: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` on Flower's simulation engine (keys in a temporary folder), compared with the
    in-process engine's final weights ``reference``."""
    import dataclasses
    import tempfile
    from pathlib import Path

    import numpy as np

    from pqc_fl.commands import run_experiment

    with tempfile.TemporaryDirectory() as d:  # the demo's secret keys do not outlive the run
        t0 = time.perf_counter()
        res = run_experiment(
            dataclasses.replace(cfg, engine="flower"), Path(d, "keys"), Path(d, "flower.json")
        )
        seconds = time.perf_counter() - t0
    state = res.get("state", {})
    match = bool(state) and all(
        np.allclose(state[k], reference[k], rtol=1e-5, atol=1e-6) for k in reference
    )
    return {
        "rounds": res["rounds"],
        "rejections": res["rejections"],
        "seconds": seconds,
        "matches_inprocess": match,
    }
