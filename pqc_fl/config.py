"""Configs of the federated experiments: every value's type and bounds declared with the field,
cross-field rules next to them, and the work a config asks for estimated before anything runs.

Light: no torch or flwr import, so the CLI starts fast. The same declarations serve ``qhybrid fl
run`` / ``fl bench`` (:mod:`pqc_fl.commands`), the ``fl`` stage of ``qhybrid reproduce``
(:mod:`pqc_fl.stage`) and the Python API (``FLConfig(...)`` checks itself).

Work caps. Each command estimates, before it starts, the CPU-core seconds it will take:

    local training   clients x rounds x local steps x STEP_SECONDS[model] x max(1, batch / 32)
    crypto           clients x rounds x (sign + verify) of the scheme (sign_seconds)
    Flower engine    + RAY_START_S for starting Ray
    memory           clients x parameters x 4 B x 3 (signed blobs, parsed views and states of a
                     round held at once by the in-process engine)

The per-step costs were measured with one torch thread on the 2-core reference machine
(``benchmarks/bench_pqc_fl_round_share.py``); the estimate is meant to within a factor of a few.
A config estimated above its ``max_cpu_s`` (default one hour) or ``max_memory_gb`` is refused with
the estimate, the keys that drive it and the override (``--set max_cpu_s=...``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

from annotated_types import Gt, Interval

from pqc_fl.attacks import INTEGRITY_ATTACKS, ByzantineAttack, RunAttack
from pqc_fl.envelope import Hash, Mode
from pqc_fl.schemes import canonical_name, get_scheme
from qhybrid.config import check_fields
from qhybrid.errors import ConfigError, QHybridError

__all__ = [
    "DIGITS_TRAIN",
    "MODELS",
    "MODEL_PARAMS",
    "STRATEGIES",
    "Engine",
    "FLConfig",
    "LocalTrainConfig",
    "Model",
    "Partition",
    "StrategyName",
    "attack_suite_seconds",
    "check_scheme",
    "Clients",
    "Rounds",
    "Seconds",
    "Seed",
    "Steps",
    "check_work",
    "keygen_seconds",
    "primitives_seconds",
    "round_costs_seconds",
    "run_memory_gb",
    "run_seconds",
    "sign_seconds",
]

Model = Literal["mlp", "cnn", "mlp-10m"]
StrategyName = Literal["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"]
Partition = Literal["iid", "dirichlet"]
Engine = Literal["inprocess", "flower"]
MODELS: tuple[Model, ...] = get_args(Model)
STRATEGIES: tuple[StrategyName, ...] = get_args(StrategyName)

DIGITS_TRAIN = 1437  # training examples of pqc_fl.task.digits (80 % of 1,797): the most clients
MAX_SEED = 2**32 - 1  # numpy / scikit-learn seeds are 32-bit
MODEL_PARAMS: dict[Model, int] = {"mlp": 4_810, "cnn": 38_282, "mlp-10m": 9_670_666}
STEP_SECONDS: dict[Model, float] = {"mlp": 1e-3, "cnn": 3e-3, "mlp-10m": 0.15}  # batch 32
RAY_START_S = 30.0  # starting Flower's simulation engine (Ray)
SIGN_BYTES_S = 3e-8  # per message byte a scheme hashes to sign + verify it (38.7 MB: ~1 s loaded)
DIGEST_BYTES_S = 6e-9  # per update byte: digest on both sides and parsing (mode "digest")
DEFAULT_MAX_CPU_S = 3600.0
DEFAULT_MAX_MEMORY_GB = 8.0

# one declaration per kind of value, shared by every command and the stage
Clients = Annotated[int, Interval(ge=1, le=DIGITS_TRAIN)]  # clients of a federation
Rounds = Annotated[int, Interval(ge=1, le=100_000)]  # federated rounds
Steps = Annotated[int, Interval(ge=1, le=100_000)]  # local optimizer steps per round
Seed = Annotated[int, Interval(ge=0, le=MAX_SEED)]
Seconds = Annotated[float, Gt(0)]  # a positive, finite number of seconds (a work cap)


def sign_seconds(scheme: str, message_bytes: int = 512) -> float:
    """Rough seconds to sign and verify one message with ``scheme``: a per-signature cost (SLH-DSA
    the slow one, its "s" sets slowest) plus the scheme's hashing of the message."""
    name = canonical_name(scheme)
    base = 0.005
    if name.startswith("slh-dsa"):
        base = 7.0 if name.endswith("s") else 1.0
    return base + SIGN_BYTES_S * message_bytes


def keygen_seconds(scheme: str) -> float:
    """Rough seconds of one key generation (RSA's prime search and SLH-DSA "s" are slow)."""
    name = canonical_name(scheme)
    return (
        1.0 if name == "rsa-3072" or (name.startswith("slh-dsa") and name.endswith("s")) else 0.05
    )


def check_scheme(scheme: str, key: str = "scheme", *, installed: bool = True) -> str:
    """The canonical name of a known (and, by default, installed) scheme, or a ConfigError naming
    ``key``."""
    try:
        return get_scheme(scheme).name if installed else canonical_name(scheme)
    except QHybridError as err:
        raise ConfigError(f"'{key}': {err}") from None


def check_work(seconds: float, cap: float, what: str, drivers: str, key: str = "max_cpu_s") -> None:
    """Refuse work estimated above ``cap`` seconds, naming what drives it and the override."""
    if seconds > cap:
        raise ConfigError(
            f"{what} is estimated at {seconds:,.0f} CPU-core seconds ({drivers}), above "
            f"{key}={cap:g}; make it smaller, or raise the cap with --set {key}="
            f"{math.ceil(seconds * 1.5)} (see docs/pqc_fl.md#work-caps)"
        )


@dataclass(frozen=True)
class LocalTrainConfig:
    """One client's local training per round."""

    steps: Steps = 20  # local optimizer steps per round
    batch_size: Annotated[int, Interval(ge=1, le=DIGITS_TRAIN)] = 32  # examples per step
    lr: Annotated[float, Interval(gt=0, le=1)] = 3e-3  # AdamW lr (a fresh optimizer each round)

    def __post_init__(self) -> None:
        check_fields(self, strict=True)


@dataclass(frozen=True)
class FLConfig:
    """One federated experiment."""

    model: Model = "mlp"  # "mlp", "cnn" or "mlp-10m"
    num_clients: Clients = 3  # all sampled every round
    rounds: Rounds = 5  # federated rounds
    partition: Partition = "iid"  # client data split
    alpha: Annotated[float, Interval(gt=0, le=1e6)] = 0.5  # Dirichlet concentration (dirichlet)
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)  # steps, batch, lr per round
    sign: bool = True  # sign and verify updates (False = plain FedAvg, the baseline)
    scheme: str = "ml-dsa-44"  # signature scheme of every client (`qhybrid fl schemes`)
    mode: Mode = "digest"  # "digest", "full" or "mu" (see pqc_fl.envelope)
    hash: Hash = "sha256"  # digest hash in mode "digest": "sha256" or "blake3"
    attack: RunAttack = "none"  # run-time attack by one client (pqc_fl.attacks.RUN_ATTACKS)
    attacker: Annotated[int, Interval(ge=0, le=DIGITS_TRAIN)] = (
        1  # attacking client (< num_clients)
    )
    engine: Engine = "inprocess"  # who runs the rounds
    strategy: StrategyName = "fedavg"  # Flower strategy inside the verifier
    min_accepted: Annotated[float, Interval(gt=0, le=1)] = 0.5  # quorum: fraction that must verify
    byzantine: ByzantineAttack = "none"  # insider attack of the Byzantine clients
    num_byzantine: Annotated[int, Interval(ge=0, le=DIGITS_TRAIN)] = (
        0  # the last clients; < num_clients
    )
    seed: Seed = 0  # split, initial weights, shuffling
    max_cpu_s: Seconds = DEFAULT_MAX_CPU_S  # refuse runs estimated above (CPU-core s)
    max_memory_gb: Annotated[float, Gt(0)] = (
        DEFAULT_MAX_MEMORY_GB  # refuse runs estimated above (GB)
    )

    def __post_init__(self) -> None:
        check_fields(self, strict=True)
        object.__setattr__(self, "scheme", check_scheme(self.scheme))
        if self.attack != "none" and self.attacker >= self.num_clients:
            raise ConfigError(
                f"'attacker' = {self.attacker} is not a client index < num_clients="
                f"{self.num_clients}"
            )
        if (self.attack != "none" or self.byzantine in INTEGRITY_ATTACKS) and not self.sign:
            raise ConfigError(
                "an attack run (attack, or an integrity byzantine attack) needs sign=true "
                "(otherwise nothing is checked)"
            )
        if self.num_byzantine >= self.num_clients:
            raise ConfigError(
                f"'num_byzantine' = {self.num_byzantine} must lie in [0, num_clients="
                f"{self.num_clients})"
            )
        if self.byzantine == "double_submission" and self.engine == "flower":
            raise ConfigError(
                "byzantine='double_submission' needs engine='inprocess' (a Flower node sends one "
                "reply per instruction; two nodes claiming one client are tested in "
                "tests/pqc_fl/test_flower_app.py)"
            )
        self.check_work()

    @property
    def runs(self) -> int:
        """Federated runs this config makes (a command may add a baseline)."""
        return 1

    def check_work(self) -> None:
        """Refuse a config estimated above ``max_cpu_s`` or ``max_memory_gb`` (module docstring)."""
        double = 2 if self.byzantine == "double_submission" else 1
        seconds = self.runs * run_seconds(
            self.model,
            self.num_clients,
            self.rounds,
            self.local.steps,
            batch_size=self.local.batch_size,
            scheme=self.scheme,
            mode=self.mode,
            sign=self.sign,
            engine=self.engine,
            updates_per_client=double,
        )
        drivers = (
            f"{self.runs} run(s) x num_clients={self.num_clients} x rounds={self.rounds} x "
            f"local.steps={self.local.steps} steps of model {self.model!r}"
        )
        check_work(seconds, self.max_cpu_s, "this run", drivers)
        gb = run_memory_gb(self.model, self.num_clients * double)
        if gb > self.max_memory_gb:
            raise ConfigError(
                f"this run is estimated to hold {gb:.1f} GB at once (num_clients="
                f"{self.num_clients} updates of model {self.model!r}), above max_memory_gb="
                f"{self.max_memory_gb:g}; use fewer clients or a smaller model, or raise the cap "
                f"with --set max_memory_gb={math.ceil(gb * 1.5)}"
            )


def run_seconds(
    model: Model,
    num_clients: int,
    rounds: int,
    local_steps: int,
    *,
    batch_size: int = 32,
    scheme: str = "ml-dsa-44",
    mode: Mode = "digest",
    sign: bool = True,
    engine: Engine = "inprocess",
    updates_per_client: int = 1,
) -> float:
    """Estimated CPU-core seconds of one federated run (module docstring)."""
    per_step = STEP_SECONDS[model] * max(1.0, batch_size / 32)
    train = num_clients * rounds * local_steps * per_step
    size = 4 * MODEL_PARAMS[model]
    per_update = (
        sign_seconds(scheme) + (DIGEST_BYTES_S if mode == "digest" else SIGN_BYTES_S) * size
    )
    crypto = num_clients * rounds * updates_per_client * per_update if sign else 0.0
    return train + crypto + (RAY_START_S if engine == "flower" else 0.0)


def run_memory_gb(model: Model, updates: int) -> float:
    """Estimated memory (GB) that ``updates`` updates of one round take (module docstring)."""
    return updates * 4 * MODEL_PARAMS[model] * 3 / 1e9


def primitives_seconds(
    schemes: Sequence[str], budget_s: float, message_sizes: Sequence[int]
) -> float:
    """Estimated seconds of :func:`pqc_fl.bench.primitive_table`: per scheme and installed backend
    a keygen cell and a sign and a verify cell per message, each at least ``budget_s`` and 4
    calls."""
    from pqc_fl.schemes import scheme_backends

    total = 0.0
    for name in schemes:
        cells = max(budget_s, 4 * keygen_seconds(name))
        cells += sum(2 * max(budget_s, 4 * sign_seconds(name, n)) for n in message_sizes)
        total += max(1, len(scheme_backends(name))) * cells
    return total


def round_costs_seconds(
    models: Sequence[Model], clients: Sequence[int], local_steps: int, scheme: str
) -> float:
    """Estimated seconds of :func:`pqc_fl.bench.round_cost_table`: one training round per model,
    then per client count N signed, verified, hashed and averaged updates of that model."""
    total = 0.0
    for m in models:
        total += (local_steps + 2) * STEP_SECONDS[m]
        per_update = sign_seconds(scheme) + DIGEST_BYTES_S * 4 * MODEL_PARAMS[m]
        total += sum(clients) * (per_update + keygen_seconds(scheme))
    return total


def attack_suite_seconds(honest: int, scheme: str) -> float:
    """Estimated seconds of :func:`pqc_fl.attacks.run_attack_suite` (every case and ``honest``
    honest updates, each signed and verified about twice)."""
    return (honest + 60) * 2 * sign_seconds(scheme)
