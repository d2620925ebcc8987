"""Reproduce stage ``fl``: post-quantum signed federated learning on digits.

:func:`run_stage` is five named steps: :func:`configure` (the runs' configs), :func:`run_experiments`,
:func:`tabulate`, :func:`plot` and :func:`judge`. The experiments:

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

import dataclasses
import time
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Interval, MinLen

from pqc_fl.attacks import PoisoningAttack
from pqc_fl.config import (
    DEFAULT_MAX_CPU_S,
    MODELS,
    Clients,
    Engine,
    FLConfig,
    LocalTrainConfig,
    Model,
    Rounds,
    Seconds,
    Steps,
    StrategyName,
    attack_suite_seconds,
    check_scheme,
    check_work,
    primitives_seconds,
    round_costs_seconds,
    run_seconds,
)
from qhybrid.config import Unique, check_fields
from qhybrid.errors import ConfigError
from qhybrid.report import Section
from qhybrid.runs import Run, atomic_write_json

TITLE = "PQC-signed federated learning (ML-DSA / Falcon / SLH-DSA)"
ROUND_SCHEME = "ml-dsa-44"  # scheme of the federated runs, the round costs and the attack suite
BYZ_CLIENTS = 10  # clients of the insider-attack runs (2 of them Byzantine)


@dataclass(frozen=True)
class StageConfig:
    """The ``fl`` stage's settings (the defaults are the quick preset)."""

    schemes: Annotated[tuple[str, ...], MinLen(1), Unique] = (
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
    budget_s: Annotated[float, Interval(gt=0, le=60)] = 0.05  # seconds per primitive-table cell
    fl_rounds: Rounds = 5  # rounds of the accuracy runs
    fl_model: Model = "mlp"  # model of the accuracy runs
    engine: Engine = "flower"  # engine of the tampering-client run: "flower" (Ray) or "inprocess"
    cost_models: Annotated[tuple[Model, ...], MinLen(1), Unique] = MODELS  # round-cost models
    cost_clients: Annotated[tuple[Clients, ...], MinLen(1), Unique] = (
        2,
        10,
    )  # round-cost client counts (100 in the benchmark)
    local_steps: Steps = 20  # local steps per round (every federated run and the round-cost model)
    honest_updates: Annotated[int, Interval(ge=1, le=10_000_000)] = (
        300  # honest updates in the attack suite (10,000 in the benchmark)
    )
    byz_rounds: Rounds = 5  # rounds of the insider-attack runs
    byz_strategies: Annotated[tuple[StrategyName, ...], MinLen(1), Unique] = (
        "fedavg",
        "fedmedian",
        "krum",
    )  # strategies compared under attack
    byz_attack: PoisoningAttack = "sign_flip"  # the model-poisoning attack (20% Byzantine)
    max_cpu_s: Seconds = DEFAULT_MAX_CPU_S  # refuse a stage estimated above this

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        names = tuple(
            check_scheme(s, f"fl.schemes[{i}]", installed=False) for i, s in enumerate(self.schemes)
        )
        if len(set(names)) != len(names):
            raise ConfigError(f"'fl.schemes' = {list(self.schemes)} names one scheme twice")
        object.__setattr__(self, "schemes", names)
        check_work(
            self.seconds(), self.max_cpu_s, "the fl stage", "its five experiments", "fl.max_cpu_s"
        )

    def seconds(self) -> float:
        """Estimated CPU-core seconds of the stage (see :mod:`pqc_fl.config`)."""
        fl = run_seconds(self.fl_model, 3, self.fl_rounds, self.local_steps)
        flower = run_seconds(self.fl_model, 3, self.fl_rounds, self.local_steps, engine="flower")
        byz = run_seconds("mlp", BYZ_CLIENTS, self.byz_rounds, self.local_steps)
        return (
            primitives_seconds(self.schemes, self.budget_s, (32, 1 << 20))
            + 3 * fl
            + (flower if self.engine == "flower" else 0.0)
            + round_costs_seconds(
                self.cost_models, self.cost_clients, self.local_steps, ROUND_SCHEME
            )
            + attack_suite_seconds(self.honest_updates, ROUND_SCHEME)
            + (6 + 2 * len(self.byz_strategies)) * byz
        )


@dataclass(frozen=True)
class Plan:
    """The federated runs of the stage, configured before any of them starts."""

    seed: int
    signed: FLConfig  # 3 clients, ML-DSA-44 on digests
    plain: FLConfig  # the same without signing
    attacked: FLConfig  # client 1 flips a weight bit after signing
    byzantine: FLConfig  # base of the insider runs (10 clients)


def run_stage(run: Run, config: StageConfig, *, seed: int, context: dict[str, Any]) -> Section:
    """Configure, run the experiments, tabulate, plot and judge; ``stage.json`` holds the raw
    results, ``context["fl"]`` the verdicts later stages may use."""
    plan = configure(config, seed)
    results = run_experiments(plan, config)
    atomic_write_json(run.artefact("fl", "stage.json"), results)
    section = tabulate(results, config)
    plot(run, section, results, config)
    judge(section, results, context)
    return section


def configure(config: StageConfig, seed: int) -> Plan:
    """The configs of every federated run (checked here, before anything runs)."""
    local = LocalTrainConfig(steps=config.local_steps)
    signed = FLConfig(model=config.fl_model, rounds=config.fl_rounds, local=local, seed=seed)
    return Plan(
        seed=seed,
        signed=signed,
        plain=dataclasses.replace(signed, sign=False),
        attacked=dataclasses.replace(signed, attack="tensor_bitflip", attacker=1),
        byzantine=FLConfig(
            num_clients=BYZ_CLIENTS, rounds=config.byz_rounds, local=local, seed=seed
        ),
    )


def run_experiments(plan: Plan, config: StageConfig) -> dict[str, Any]:
    """The five experiments' results (what ``stage.json`` holds)."""
    from pqc_fl import bench
    from pqc_fl.attacks import run_attack_suite
    from pqc_fl.byzantine import accuracy_under_attack, integrity_runs

    out: dict[str, Any] = {"hardware": bench.hardware()}
    out["primitives"] = bench.primitive_table(
        list(config.schemes), budget_s=config.budget_s, all_backends=True
    )
    out["fl"] = _federated_runs(plan, config.engine)
    out["round_costs"] = bench.round_cost_table(
        config.cost_models, config.cost_clients, local_steps=config.local_steps, seed=plan.seed
    )
    out["attacks"] = run_attack_suite(
        ROUND_SCHEME, "digest", honest=config.honest_updates, seed=plan.seed
    )
    integrity = integrity_runs(plan.byzantine)
    accuracy = accuracy_under_attack(
        plan.byzantine, config.byz_strategies, (config.byz_attack,), (0.2,)
    )
    out["insider"] = {"integrity": integrity, "accuracy": accuracy}
    return out


def _federated_runs(plan: Plan, engine: Engine) -> dict[str, Any]:
    """Signed, unsigned and attacked in-process runs, and the attacked run on Flower's engine."""
    import numpy as np

    from pqc_fl.simulate import run_inprocess

    signed = run_inprocess(plan.signed)
    plain = run_inprocess(plan.plain)
    t0 = time.perf_counter()
    attacked = run_inprocess(plan.attacked)
    inprocess_s = time.perf_counter() - t0
    fl: dict[str, Any] = {
        "signed": signed.rounds,
        "unsigned": plain.rounds,
        "attacked": attacked.rounds,
        "rejections": attacked.rejections,
        "identical_weights": all(
            np.array_equal(signed.state[k], plain.state[k]) for k in plain.state
        ),
    }
    if engine == "flower":
        flower = _flower_run(plan.attacked, attacked.state)
        fl["flower"] = {**flower, "inprocess_seconds": inprocess_s}
    return fl


def _flower_run(cfg: FLConfig, reference: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` on Flower's simulation engine (keys in a temporary folder), compared with the
    in-process engine's final weights ``reference``."""
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


def _attacked(fl: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tampering run's rounds and rejections, from Flower's engine when it ran."""
    src = fl.get("flower", fl)
    return src["rounds"] if "flower" in fl else fl["attacked"], src["rejections"]


def _worst_sign_verify_share(costs: list[dict[str, Any]]) -> float:
    """The largest sign + verify share (%) of a 9.7 M-parameter round (NaN if not measured)."""
    ten_m = [c for c in costs if c["model"] == "mlp-10m"]
    return max((c["sign_verify_share_pct"] for c in ten_m), default=float("nan"))


def tabulate(out: dict[str, Any], config: StageConfig) -> Section:
    """The section's text, headline and tables."""
    fl, suite, hw = out["fl"], out["attacks"], out["hardware"]
    _, rejections = _attacked(fl)
    flower = fl.get("flower")
    worst = _worst_sign_verify_share(out["round_costs"])
    section = Section(
        TITLE,
        text=(
            f"Signing leaves training unchanged: final accuracy {fl['signed'][-1]['test_acc']:.4f} "
            f"signed vs {fl['unsigned'][-1]['test_acc']:.4f} unsigned, weights bitwise identical: "
            f"**{fl['identical_weights']}**. A client flipping one weight bit after signing was "
            f"rejected in {len(rejections)}/{config.fl_rounds} rounds "
            f"({', '.join(sorted({r['reason'] for r in rejections}))}) on the {config.engine} "
            "engine"
            + (
                f" (Flower simulation engine with Ray: {flower['seconds']:.1f} s vs "
                f"{flower['inprocess_seconds']:.1f} s in-process; final weights equal to the "
                f"in-process engine's to float32 rounding: **{flower['matches_inprocess']}**)"
                if flower
                else ""
            )
            + ". "
            f"With ML-DSA-44 on digests, signing + verification take at most {worst:.3g}% of a "
            f"round for the 9.7 M-parameter model (target < 1%). Attack suite: "
            f"{suite['rejection_rate']:.0%} of {len(suite['cases'])} cases rejected with the "
            f"expected reason, {suite['false_rejections']} false rejections of "
            f"{suite['honest']} honest updates. Hardware: {hw['cpu']}, {hw['cores']} cores, "
            f"load average {hw['load_avg_1min'] or 0:.1f}. Other runs use the deterministic "
            "in-process engine with the same server code (RoundVerifier and Flower's strategies)."
        ),
    )
    section.headline = (
        f"signed == unsigned weights: {fl['identical_weights']}; tampered updates rejected "
        f"{len(rejections)}/{config.fl_rounds}; attack suite {suite['rejection_rate']:.0%} "
        f"rejected; sign + verify <= {worst:.2g}% of a 9.7M-parameter round"
    )
    _add_tables(section, out, config)
    return section


def _add_tables(section: Section, out: dict[str, Any], config: StageConfig) -> None:
    """Primitives, round-time shares, attack suite, insider integrity and accuracy tables."""
    from pqc_fl import bench

    section.add_table(
        "Signature primitives: median [interquartile range]",
        [
            {k: v for k, v in r.items() if k != "pq"}
            for r in bench.primitive_markdown_rows(out["primitives"])
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
            for c in out["round_costs"]
        ],
    )
    section.add_table(
        "Attack suite (ML-DSA-44, digest mode)",
        [
            {k: c[k] for k in ("attack", "expected", "got", "as_expected")}
            for c in out["attacks"]["cases"]
        ],
    )
    keys = (
        "attack",
        "byzantine_updates",
        "rejected",
        "reasons",
        "all_rejected_as_expected",
        "honest_rejected",
        "final_acc",
        "attack_free_acc",
    )
    section.add_table(
        "Insider integrity attacks: 2 of 10 clients with valid keys (every update refused?)",
        [{k: r[k] for k in keys} for r in out["insider"]["integrity"]],
    )
    section.add_table(
        f"Accuracy under attack: {config.byz_attack} updates from 2 of 10 clients "
        f"({config.byz_rounds} rounds); 'none' is each strategy's attack-free run",
        [
            {k: r[k] for k in ("strategy", "attack", "byzantine", "final_acc", "rejected")}
            for r in out["insider"]["accuracy"]
        ],
    )


def plot(run: Run, section: Section, out: dict[str, Any], config: StageConfig) -> None:
    """The two figures: accuracy with and without signing beside the crypto share of a round,
    and accuracy under attack per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    section.add_figure(
        "Accuracy with and without signing; crypto share of round time",
        run.save_figure(_overview_figure(out, config), "figures/pqc_fl_overview"),
    )
    section.add_figure(
        "Accuracy under attack: FedAvg beside robust strategies inside the verifying wrapper",
        run.save_figure(_byzantine_figure(out, config), "figures/pqc_fl_byzantine"),
    )


def _overview_figure(out: dict[str, Any], config: StageConfig) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    fl, costs = out["fl"], out["round_costs"]
    attacked_rounds, _ = _attacked(fl)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    rounds = [r["round"] for r in fl["signed"]]
    ax[0].plot(rounds, [r["test_acc"] for r in fl["unsigned"]], "o-", label="unsigned")
    ax[0].plot(rounds, [r["test_acc"] for r in fl["signed"]], "x--", label="signed (ML-DSA-44)")
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
    return fig


def _byzantine_figure(out: dict[str, Any], config: StageConfig) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    byz = out["insider"]["accuracy"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names = list(config.byz_strategies)
    x = np.arange(len(names))
    for off, attack, label in (
        (-0.2, "none", "attack-free"),
        (0.2, config.byz_attack, f"{config.byz_attack}, 2 of 10 clients"),
    ):
        acc = [
            next(r["final_acc"] for r in byz if r["strategy"] == s and r["attack"] == attack)
            for s in names
        ]
        ax.bar(x + off, acc, 0.4, label=label)
    ax.set(
        xticks=x,
        ylabel="final test accuracy",
        ylim=(0, 1),
        title="Byzantine insiders with valid keys (digits)",
    )
    ax.set_xticklabels(names)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def judge(section: Section, out: dict[str, Any], context: dict[str, Any]) -> None:
    """Fail the section if signing changed training, an attack got through or was refused for
    another reason, an honest update was refused, or Flower's model differs from the in-process
    engine's; hand the verdicts to later stages in ``context["fl"]``."""
    fl, suite = out["fl"], out["attacks"]
    integrity = out["insider"]["integrity"]
    insider_ok = all(r["all_rejected_as_expected"] and not r["honest_rejected"] for r in integrity)
    context["fl"] = {
        "identical_weights": fl["identical_weights"],
        "rejection_rate": suite["rejection_rate"],
        "insider_integrity_ok": insider_ok,
    }
    flower = fl.get("flower")
    if (
        not fl["identical_weights"]
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
