"""Configs of the federated experiments (light: no torch import, so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pqc_fl.attacks import BYZANTINE_ATTACKS, INTEGRITY_ATTACKS, RUN_ATTACKS
from pqc_fl.envelope import HASHES, MODES
from pqc_fl.schemes import get_scheme
from qhybrid.errors import QHybridError

__all__ = ["MODELS", "FLConfig", "LocalTrainConfig"]

MODELS = ("mlp", "cnn", "mlp-10m")
STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")


@dataclass(frozen=True)
class LocalTrainConfig:
    """One client's local training per round."""

    steps: int = 20  # local optimizer steps per round
    batch_size: int = 32  # examples per step
    lr: float = 3e-3  # AdamW learning rate (a fresh optimizer each round, as in FedAvg)


@dataclass(frozen=True)
class FLConfig:
    """One federated experiment."""

    model: str = "mlp"  # "mlp", "cnn" or "mlp-10m"
    num_clients: int = 3  # clients, all sampled every round
    rounds: int = 5  # federated rounds
    partition: Literal["iid", "dirichlet"] = "iid"  # client data split
    alpha: float = 0.5  # Dirichlet concentration for partition="dirichlet" (smaller = more skew)
    local: LocalTrainConfig = LocalTrainConfig()  # local steps, batch size, lr per round
    sign: bool = True  # sign and verify updates (False = plain FedAvg, the baseline)
    scheme: str = "ml-dsa-44"  # signature scheme of every client
    mode: str = "digest"  # "digest", "full" or "mu" (see pqc_fl.envelope)
    hash: str = "sha256"  # digest hash in mode "digest": "sha256" or "blake3"
    attack: str = "none"  # run-time attack by one client (pqc_fl.attacks.RUN_ATTACKS)
    attacker: int = 1  # index of the attacking client
    engine: Literal["inprocess", "flower"] = "inprocess"  # who runs the rounds
    strategy: str = "fedavg"  # Flower strategy inside the verifier (pqc_fl.strategy.STRATEGIES)
    min_accepted: float = 0.5  # quorum: fraction of replies that must verify (1 = all)
    byzantine: str = "none"  # insider attack of the Byzantine clients (BYZANTINE_ATTACKS)
    num_byzantine: int = 0  # Byzantine clients (the last indices); Krum/Bulyan assume this many
    seed: int = 0  # data split, initial weights and local shuffling

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise QHybridError(f"model={self.model!r} is not one of {MODELS}")
        if self.num_clients < 1 or self.rounds < 1:
            raise QHybridError("num_clients and rounds must be >= 1")
        if self.attack != "none" and not (0 <= self.attacker < self.num_clients):
            raise QHybridError(
                f"attacker={self.attacker} is not a client index < {self.num_clients}"
            )
        if (self.attack != "none" or self.byzantine in INTEGRITY_ATTACKS) and not self.sign:
            raise QHybridError(
                "an attack run (attack, or an integrity byzantine attack) needs sign=true "
                "(otherwise nothing is checked)"
            )
        if self.hash not in HASHES:
            raise QHybridError(f"hash={self.hash!r} is not one of {HASHES}")
        if self.mode not in MODES:
            raise QHybridError(f"mode={self.mode!r} is not one of {MODES}")
        if self.attack not in RUN_ATTACKS:
            raise QHybridError(f"attack={self.attack!r} is not one of {RUN_ATTACKS}")
        get_scheme(self.scheme)  # fails early with an install hint
        if self.strategy not in STRATEGIES:
            raise QHybridError(f"strategy={self.strategy!r} is not one of {STRATEGIES}")
        if self.byzantine not in BYZANTINE_ATTACKS:
            raise QHybridError(f"byzantine={self.byzantine!r} is not one of {BYZANTINE_ATTACKS}")
        if not 0 <= self.num_byzantine < self.num_clients:
            raise QHybridError(
                f"num_byzantine={self.num_byzantine} must lie in [0, num_clients={self.num_clients})"
            )
        if self.byzantine == "double_submission" and self.engine == "flower":
            raise QHybridError(
                "byzantine='double_submission' needs engine='inprocess' (a Flower node sends one "
                "reply per instruction; two nodes claiming one client are tested in "
                "tests/pqc_fl/test_flower_app.py)"
            )
        if not 0.0 < self.min_accepted <= 1.0:
            raise QHybridError(f"min_accepted={self.min_accepted} must lie in (0, 1]")
