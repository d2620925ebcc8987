"""``qhybrid fl``: keys, federated runs with signed updates, and the cost benchmarks.

    qhybrid fl schemes                                  # schemes, backends and sizes here
    qhybrid fl keys --dir keys --clients 3 --max-examples 600   # out-of-band keys (0600 files)
    qhybrid fl run --set model="cnn" --set partition="dirichlet"
    qhybrid fl run --set engine="flower" --set attack="tensor_bitflip"
    qhybrid fl bench --set 'parts=["primitives","bandwidth"]'

Every command's values are declared in its config dataclass (types, bounds, allowed names, work
caps: :mod:`pqc_fl.config`) and checked before anything is written; a run folder is created only
for a config that passed, and removed again if the command fails before its first result.
Heavy imports (torch, flwr) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from annotated_types import Interval, MinLen

from pqc_fl.attacks import INTEGRITY_ATTACKS
from pqc_fl.config import (
    DEFAULT_MAX_CPU_S,
    MODEL_PARAMS,
    MODELS,
    Clients,
    FLConfig,
    Model,
    Seconds,
    Seed,
    Steps,
    attack_suite_seconds,
    check_scheme,
    check_work,
    keygen_seconds,
    primitives_seconds,
    round_costs_seconds,
    sign_seconds,
)
from qhybrid.config import (
    Unique,
    add_config_arguments,
    check_fields,
    config_from_args,
    resolve_config,
)
from qhybrid.errors import ConfigError, QHybridError
from qhybrid.runs import Run

__all__ = ["BenchConfig", "FLRunConfig", "KeysConfig", "register", "run_experiment"]

Part = Literal["primitives", "rounds", "throughput", "bandwidth", "attacks"]
PARTS: tuple[Part, ...] = get_args(Part)
UPDATE_BYTES = 4 * 9_450_000  # the primitive table's "whole update" message (~ the 9.7 M model)


@dataclass(frozen=True)
class FLRunConfig(FLConfig):
    """``qhybrid fl run``: an :class:`~pqc_fl.config.FLConfig` plus the unsigned baseline."""

    compare_unsigned: bool = True  # also run the identical experiment without signatures

    @property
    def runs(self) -> int:
        """Two runs (signed, then unsigned) when the baseline is compared."""
        return 2 if self.compare_unsigned and self.sign else 1


@dataclass(frozen=True)
class BenchConfig:
    """``qhybrid fl bench``: which cost tables to measure, and how hard."""

    parts: Annotated[tuple[Part, ...], MinLen(1), Unique] = PARTS  # tables to measure
    schemes: Annotated[tuple[str, ...], Unique] = ()  # primitive/bandwidth schemes; () = all here
    budget_s: Annotated[float, Interval(gt=0, le=60)] = 0.2  # seconds per primitive-table cell
    models: Annotated[tuple[Model, ...], MinLen(1), Unique] = MODELS  # round-cost models
    clients: Annotated[tuple[Clients, ...], MinLen(1), Unique] = (
        2,
        10,
        100,
    )  # round-cost client counts
    local_steps: Steps = 20  # local steps in the round model
    round_scheme: str = "ml-dsa-44"  # scheme of the round-cost, throughput and attack tables
    workers: Annotated[tuple[Annotated[int, Interval(ge=1, le=64)], ...], MinLen(1), Unique] = (
        1,
        2,
    )  # process-pool sizes for verification throughput
    throughput_updates: Annotated[int, Interval(ge=1, le=1_000_000)] = (
        2000  # updates verified per pool size
    )
    honest_updates: Annotated[int, Interval(ge=1, le=10_000_000)] = (
        10_000  # honest updates in the attack suite (false-rejection check)
    )
    seed: Seed = 0  # training data and weights
    max_cpu_s: Seconds = DEFAULT_MAX_CPU_S  # refuse benchmarks estimated above (CPU-core s)

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        names = tuple(check_scheme(s, f"schemes[{i}]") for i, s in enumerate(self.schemes))
        if len(set(names)) != len(names):
            raise ConfigError(f"'schemes' = {list(self.schemes)} names one scheme twice")
        object.__setattr__(self, "schemes", names)
        object.__setattr__(self, "round_scheme", check_scheme(self.round_scheme, "round_scheme"))
        drivers = ", ".join(f"{p} {self.part_seconds(p):,.0f} s" for p in self.parts)
        seconds = sum(self.part_seconds(p) for p in self.parts)
        check_work(seconds, self.max_cpu_s, "this benchmark", drivers)

    def part_seconds(self, part: Part) -> float:
        """Estimated CPU-core seconds of one table (see :mod:`pqc_fl.config`)."""
        from pqc_fl.schemes import available_schemes

        schemes = self.schemes or tuple(available_schemes())
        if part == "primitives":
            return primitives_seconds(schemes, self.budget_s, (32, 1 << 20, UPDATE_BYTES))
        if part == "rounds":
            return round_costs_seconds(
                self.models, self.clients, self.local_steps, self.round_scheme
            )
        if part == "throughput":
            one = sign_seconds(self.round_scheme, 4 * MODEL_PARAMS["mlp"])
            return self.throughput_updates * one * (1 + 5 * len(self.workers))
        if part == "bandwidth":
            return 1.0 + sum(sign_seconds(s) + keygen_seconds(s) for s in schemes)
        return attack_suite_seconds(self.honest_updates, self.round_scheme)


@dataclass(frozen=True)
class KeysConfig:
    """``qhybrid fl keys``: out-of-band key provisioning into a folder without keys."""

    dir: str | None = None  # folder for client-<i>.json, server.json and registry.json
    clients: Clients = 3  # number of clients
    scheme: str = "ml-dsa-44"  # the clients' signature scheme (`qhybrid fl schemes`)
    max_examples: Annotated[int, Interval(ge=1, le=2**53)] | None = None  # each client's cap

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        if not self.dir:
            raise ConfigError('give the key folder: --dir DIR (or --set dir="DIR")')
        if self.max_examples is None:
            raise ConfigError(
                "give the largest num_examples a client's update may claim (its data-set size): "
                "--max-examples N (or --set max_examples=N)"
            )
        object.__setattr__(self, "scheme", check_scheme(self.scheme))


def _base_config(cfg: FLRunConfig, **changes: Any) -> FLConfig:
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(FLConfig)}
    values.update(changes)
    return FLConfig(**values)


def run_experiment(cfg: FLConfig, key_dir: Path, out: Path) -> dict[str, Any]:
    """Run one FLConfig on its engine; returns ``{"rounds", "rejections", "state"}``.

    The Flower engine provisions keys into ``key_dir`` and writes the server's summary to
    ``out``; a failure inside Flower or Ray becomes one :class:`~qhybrid.errors.QHybridError`.
    """
    if cfg.engine == "inprocess":
        from pqc_fl.simulate import run_inprocess

        r = run_inprocess(cfg)
        return {"rounds": r.rounds, "rejections": r.rejections, "state": r.state}
    import numpy as np

    from pqc_fl.flower_app import run_flower_simulation
    from pqc_fl.keys import provision_keys
    from pqc_fl.task import digits, partition

    y = digits(cfg.seed)[1]
    parts = partition(y, cfg.num_clients, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed)
    provision_keys(key_dir, cfg.num_clients, cfg.scheme, max_examples=[len(p) for p in parts])
    try:
        s = run_flower_simulation(cfg, key_dir, out)
    except QHybridError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray's and Flower's own errors, at one boundary
        raise QHybridError(
            f"the Flower simulation failed ({type(err).__name__}: {err}); rerun with -v for "
            'Flower\'s log, or use --set engine="inprocess"'
        ) from err
    res: dict[str, Any] = {"rounds": s["rounds"], "rejections": s["rejections"]}
    if s.get("final_state"):  # kept for the small MLP only
        res["state"] = {k: np.asarray(v, np.float32) for k, v in s["final_state"].items()}
    return res


@contextlib.contextmanager
def _run_folder(name: str, cfg: Any, args: argparse.Namespace) -> Iterator[Run]:
    """A run folder for a config that passed its checks, removed again if the command fails
    (or is interrupted) before its first result."""
    from qhybrid.runs import create_run

    run = create_run(name, cfg, root=args.out, seed=cfg.seed)
    try:
        yield run
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(FLRunConfig, args)
    with _run_folder("fl", cfg, args) as run:
        signed = run_experiment(
            _base_config(cfg), run.artefact("keys"), run.artefact("flower.json")
        )
        plain = None
        if cfg.compare_unsigned and cfg.sign:
            byz = "none" if cfg.byzantine in INTEGRITY_ATTACKS else cfg.byzantine
            plain = run_experiment(
                _base_config(cfg, sign=False, attack="none", byzantine=byz),
                run.artefact("keys-unsigned"),
                run.artefact("flower-unsigned.json"),
            )
    report = _report_run(run, cfg, signed, plain)
    print(f"report: {report}")
    return 0


def _report_run(
    run: Run, cfg: FLRunConfig, signed: dict[str, Any], plain: dict[str, Any] | None
) -> Path:
    """metrics.jsonl, summary.json and report.md of ``qhybrid fl run``."""
    import numpy as np

    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json

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
    summary: dict[str, Any] = {"signed": signed["rounds"], "rejections": signed["rejections"]}
    if plain is not None:
        for row, p in zip(rows, plain["rounds"], strict=True):
            row["unsigned test acc"] = p["test_acc"]
        summary["unsigned"] = plain["rounds"]
    if plain is not None and cfg.attack == "none" and cfg.byzantine == "none":
        same = [r["test_acc"] for r in signed["rounds"]] == [r["test_acc"] for r in plain["rounds"]]
        weights = "state" in signed and "state" in plain
        if weights:
            same = same and all(
                np.array_equal(signed["state"][k], plain["state"][k]) for k in plain["state"]
            )
        summary["signing_changes_nothing"] = same
        how = "bitwise-identical weights" if weights else "identical accuracy every round"
        verdict = f"yes ({how})" if same else "NO"
        section.text = f"Accuracy with signing equals accuracy without: **{verdict}**."
    if missed := [r["round"] for r in rows if not r["quorum met"]]:
        section.text += (
            f"\n\n**Quorum not met in rounds {missed}**: fewer verified updates than "
            f"min_accepted={cfg.min_accepted} of the replies; the global model was not updated."
        )
    section.add_table("Test accuracy per round", rows)
    if signed["rejections"]:
        section.add_table("Rejected updates", signed["rejections"])
    atomic_write_json(run.artefact("summary.json"), summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "state"}, default=str)[:2000])
    return write_report(run, "qhybrid fl run", [section])


def _bench(args: argparse.Namespace) -> int:
    from pqc_fl import bench
    from pqc_fl.attacks import run_attack_suite
    from qhybrid.report import Section, write_report
    from qhybrid.runs import atomic_write_json

    cfg = config_from_args(BenchConfig, args)
    with _run_folder("fl-bench", cfg, args) as run:
        out: dict[str, Any] = {"hardware": bench.hardware()}
        section = Section("qhybrid fl bench", text=f"Hardware: `{out['hardware']}`")
        schemes = list(cfg.schemes) or None
        if "primitives" in cfg.parts:
            rows = bench.primitive_table(schemes, update_bytes=UPDATE_BYTES, budget_s=cfg.budget_s)
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
            res = run_attack_suite(
                cfg.round_scheme, "digest", honest=cfg.honest_updates, seed=cfg.seed
            )
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

    flags = {"dir": args.dir, "clients": args.clients, "scheme": args.scheme}
    flags["max_examples"] = args.max_examples
    aliases = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    cfg = resolve_config(KeysConfig, args.config, [*args.overrides, *aliases])
    key_dir, cap = cfg.dir or "", cfg.max_examples or 0  # both given: KeysConfig checked
    reg = provision_keys(key_dir, cfg.clients, cfg.scheme, max_examples=cap)
    for r in reg.records():
        print(
            f"{r.client_id}: key {r.key_id} ({r.scheme}, {len(r.public_key)} B public key, "
            f"at most {r.max_examples} examples)"
        )
    print(
        f"registry: {cfg.dir}/registry.json, signed with the server key {cfg.dir}/server.json "
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
    """Add ``schemes``, ``keys``, ``run`` and ``bench`` to the ``qhybrid fl`` parser."""
    sub = parser.add_subparsers(dest="fl_command", metavar="COMMAND", required=True)
    p = sub.add_parser("schemes", help="list signature schemes, backends and sizes")
    p.set_defaults(func=_schemes)
    p = sub.add_parser("keys", help="generate client key files (0600) and the server's registry")
    add_config_arguments(p, "pqc_fl.commands:KeysConfig")
    p.add_argument("--dir", help="alias of --set dir=...: folder for the key files")
    p.add_argument("--clients", type=int, help="alias of --set clients=N (default 3)")
    p.add_argument("--scheme", help="alias of --set scheme=...: signature scheme")
    p.add_argument(
        "--max-examples",
        type=int,
        help="alias of --set max_examples=N: the largest num_examples a client's update may "
        "claim (its data-set size)",
    )
    p.set_defaults(func=_keys)
    p = sub.add_parser("run", help="a federated run with signed updates (+ unsigned baseline)")
    add_config_arguments(p, "pqc_fl.commands:FLRunConfig")
    p.set_defaults(func=_run)
    p = sub.add_parser("bench", help="primitive, round-share, throughput, bandwidth, attack tables")
    add_config_arguments(p, "pqc_fl.commands:BenchConfig")
    p.set_defaults(func=_bench)
