"""``qhybrid fl``: keys, federated runs with signed updates, and the cost benchmarks.

    qhybrid fl schemes                                  # schemes, backends and sizes here
    qhybrid fl keys --dir keys --clients 3              # out-of-band key provisioning (0600 files)
    qhybrid fl run --set model="cnn" --set partition="dirichlet"
    qhybrid fl run --set engine="flower" --set attack="tensor_bitflip"
    qhybrid fl bench --set 'parts=["primitives","bandwidth"]'

Heavy imports (torch, flwr) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from pqc_fl.attacks import INTEGRITY_ATTACKS
from pqc_fl.config import FLConfig
from qhybrid.config import add_config_arguments, config_from_args

__all__ = ["BenchConfig", "FLRunConfig", "register"]


@dataclass(frozen=True)
class FLRunConfig(FLConfig):
    """``qhybrid fl run``: an :class:`~pqc_fl.simulate.FLConfig` plus the unsigned baseline."""

    compare_unsigned: bool = True  # also run the identical experiment without signatures


@dataclass(frozen=True)
class BenchConfig:
    """``qhybrid fl bench``: which cost tables to measure, and how hard."""

    parts: tuple[str, ...] = ("primitives", "rounds", "throughput", "bandwidth", "attacks")
    schemes: tuple[str, ...] = ()  # primitive/bandwidth schemes; () = every available one
    budget_s: float = 0.2  # seconds per primitive-table cell (at least 3 calls each)
    models: tuple[str, ...] = ("mlp", "cnn", "mlp-10m")  # round-cost models
    clients: tuple[int, ...] = (2, 10, 100)  # round-cost client counts
    local_steps: int = 20  # local AdamW steps per round in the round-cost model
    round_scheme: str = "ml-dsa-44"  # scheme of the round-cost and throughput tables
    workers: tuple[int, ...] = (1, 2)  # process-pool sizes for verification throughput
    throughput_updates: int = 2000  # updates verified per pool size
    honest_updates: int = 10_000  # honest updates in the attack suite (false-rejection check)
    seed: int = 0


def _base_config(cfg: FLRunConfig, **changes: Any) -> FLConfig:
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(FLConfig)}
    values.update(changes)
    return FLConfig(**values)


def run_experiment(cfg: FLConfig, key_dir: Any, out: Any) -> dict[str, Any]:
    """Run one FLConfig on its engine; returns ``{"rounds", "rejections", "state"}``."""
    if cfg.engine == "flower":
        import numpy as np

        from pqc_fl.flower_app import run_flower_simulation
        from pqc_fl.keys import provision_keys
        from pqc_fl.task import digits, partition

        y = digits(cfg.seed)[1]
        sizes = [
            len(p)
            for p in partition(
                y, cfg.num_clients, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed
            )
        ]
        provision_keys(key_dir, cfg.num_clients, cfg.scheme, max_examples=sizes)

        s = run_flower_simulation(cfg, key_dir, out)
        res = {"rounds": s["rounds"], "rejections": s["rejections"]}
        if s.get("final_state"):  # kept for the small MLP only
            res["state"] = {k: np.asarray(v, np.float32) for k, v in s["final_state"].items()}
        return res
    from pqc_fl.simulate import run_inprocess

    r = run_inprocess(cfg)
    return {"rounds": r.rounds, "rejections": r.rejections, "state": r.state}


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json, create_run

    cfg = config_from_args(FLRunConfig, args)
    run = create_run("fl", cfg, root=args.out, seed=cfg.seed)
    signed = run_experiment(_base_config(cfg), run.artefact("keys"), run.artefact("flower.json"))
    for r in signed["rounds"]:
        run.log_metrics({"signed": True, **{k: v for k, v in r.items() if not isinstance(v, list)}})
    section = Section(
        f"Federated {cfg.model} on digits, {cfg.num_clients} clients, {cfg.partition}, "
        f"{cfg.scheme} ({cfg.mode}), engine {cfg.engine}"
    )
    rows = [
        {
            "round": r["round"],
            "signed test acc": r["test_acc"],
            "accepted": r["accepted"],
            "rejected": r["rejected"],
            "quorum met": r.get("quorum_met", True),
        }
        for r in signed["rounds"]
    ]
    missed = [r["round"] for r in rows if not r["quorum met"]]
    summary: dict[str, Any] = {"signed": signed["rounds"], "rejections": signed["rejections"]}
    if cfg.compare_unsigned and cfg.sign:
        plain = run_experiment(
            _base_config(
                cfg,
                sign=False,
                attack="none",
                byzantine="none" if cfg.byzantine in INTEGRITY_ATTACKS else cfg.byzantine,
            ),
            run.artefact("keys-unsigned"),
            run.artefact("flower-unsigned.json"),
        )
        for row, p in zip(rows, plain["rounds"], strict=True):
            row["unsigned test acc"] = p["test_acc"]
        summary["unsigned"] = plain["rounds"]
        if cfg.attack == "none" and cfg.byzantine == "none":
            same = [r["test_acc"] for r in signed["rounds"]] == [
                r["test_acc"] for r in plain["rounds"]
            ]
            weights = "state" in signed and "state" in plain
            if weights:
                same = same and all(
                    np.array_equal(signed["state"][k], plain["state"][k]) for k in plain["state"]
                )
            summary["signing_changes_nothing"] = same
            how = "bitwise-identical weights" if weights else "identical accuracy every round"
            section.text = f"Accuracy with signing equals accuracy without: **{f'yes ({how})' if same else 'NO'}**."
    if missed:
        section.text += (
            f"\n\n**Quorum not met in rounds {missed}**: fewer verified updates than "
            f"min_accepted={cfg.min_accepted} of the replies; the global model was not updated."
        )
    section.add_table("Test accuracy per round", rows)
    if signed["rejections"]:
        section.add_table("Rejected updates", signed["rejections"])
    atomic_write_json(run.artefact("summary.json"), summary)
    report = write_report(run, "qhybrid fl run", [section])
    print(json.dumps({k: v for k, v in summary.items() if k != "state"}, default=str)[:2000])
    print(f"report: {report}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pqc_fl import bench
    from pqc_fl.attacks import run_attack_suite
    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json, create_run

    cfg = config_from_args(BenchConfig, args)
    run = create_run("fl-bench", cfg, root=args.out, seed=cfg.seed)
    out: dict[str, Any] = {"hardware": bench.hardware()}
    section = Section("qhybrid fl bench", text=f"Hardware: `{out['hardware']}`")
    schemes = list(cfg.schemes) or None
    if "primitives" in cfg.parts:
        rows = bench.primitive_table(schemes, update_bytes=4 * 9_450_000, budget_s=cfg.budget_s)
        out["primitives"] = rows
        section.add_table("Primitives: median [IQR]", bench.primitive_markdown_rows(rows))
    if "rounds" in cfg.parts:
        out["rounds"] = bench.round_cost_table(
            cfg.models,
            cfg.clients,
            scheme=cfg.round_scheme,
            local_steps=cfg.local_steps,
            seed=cfg.seed,
        )
        section.add_table("Crypto share of round time", out["rounds"])
    if "throughput" in cfg.parts:
        out["throughput"] = bench.verify_throughput(
            cfg.round_scheme, n_updates=cfg.throughput_updates, workers=cfg.workers
        )
        section.add_table("Server verification throughput", out["throughput"])
    if "bandwidth" in cfg.parts:
        out["bandwidth"] = bench.bandwidth_table(schemes)
        section.add_table("Bytes added per update", out["bandwidth"])
    if "attacks" in cfg.parts:
        res = run_attack_suite(cfg.round_scheme, "digest", honest=cfg.honest_updates, seed=cfg.seed)
        out["attacks"] = res
        section.add_table(
            f"Attack suite: rejection rate {res['rejection_rate']:.0%}, "
            f"{res['false_rejections']} false rejections of {res['honest']} honest updates",
            res["cases"],
        )
    atomic_write_json(run.artefact("bench.json"), out)
    print(f"report: {write_report(run, 'qhybrid fl bench', [section])}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from pqc_fl.keys import provision_keys

    reg = provision_keys(args.dir, args.clients, args.scheme, max_examples=args.max_examples)
    for r in reg.records():
        print(
            f"{r.client_id}: key {r.key_id} ({r.scheme}, {len(r.public_key)} B public key, "
            f"at most {r.max_examples} examples)"
        )
    print(
        f"registry: {args.dir}/registry.json, signed with the server key {args.dir}/server.json "
        "(both stay with the server); client-<i>.json to client i"
    )
    return 0


def _schemes(args: argparse.Namespace) -> int:
    from pqc_fl.schemes import available_schemes, get_scheme, scheme_backends

    print(f"{'scheme':20} {'backends':28} {'level':>5} {'pk B':>6} {'sig B':>6}")
    for n in available_schemes():
        s = get_scheme(n)
        print(
            f"{n:20} {','.join(scheme_backends(n)):28} {s.nist_level:>5} "
            f"{s.public_key_size:>6} {s.signature_size:>6}"
        )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fl_command", metavar="COMMAND", required=True)
    p = sub.add_parser("schemes", help="list signature schemes, backends and sizes")
    p.set_defaults(func=_schemes)
    p = sub.add_parser("keys", help="generate client key files (0600) and the server's registry")
    p.add_argument("--dir", required=True, help="folder for client-<i>.json and registry.json")
    p.add_argument("--clients", type=int, default=3, help="number of clients (default 3)")
    p.add_argument("--scheme", default="ml-dsa-44", help="signature scheme (default ml-dsa-44)")
    p.add_argument(
        "--max-examples",
        type=int,
        required=True,
        help="largest num_examples a client's update may claim (its data-set size)",
    )
    p.set_defaults(func=_keys)
    p = sub.add_parser("run", help="a federated run with signed updates (+ unsigned baseline)")
    add_config_arguments(p, "pqc_fl.commands:FLRunConfig")
    p.set_defaults(func=_run)
    p = sub.add_parser("bench", help="primitive, round-share, throughput, bandwidth, attack tables")
    add_config_arguments(p, "pqc_fl.commands:BenchConfig")
    p.set_defaults(func=_bench)
