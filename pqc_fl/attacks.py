"""The attack suite: forged, replayed and tampered updates, each with the reason code it must get.

Every case starts from an honest update signed by client ``a`` and changes what an attacker on the
wire (or a malicious client) could change. The ``insider_*`` cases are signed validly with ``a``'s
registered key: only the server policy (schema, value range, registered example cap, sending node,
one update per round) stands between them and the global model. :func:`run_attack_suite` checks that each case is
rejected with its expected :class:`~pqc_fl.envelope.Reason` and that honest updates are all
accepted. The Flower integration test and the benchmark reuse these cases.
"""

from __future__ import annotations

import dataclasses
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

from pqc_fl.envelope import CONTEXT, Mode, signed_message, tensor_stream
from pqc_fl.keys import ClientKey, KeyRegistry, generate_client_key
from pqc_fl.policy import ReplayGuard, ServerPolicy, schema_of
from pqc_fl.schemes import get_scheme
from pqc_fl.sign import sign_envelope, sign_update
from pqc_fl.verify import Reason, verify_update
from pqc_fl.wire import SignedUpdate

__all__ = [
    "ATTACKS",
    "BYZANTINE_ATTACKS",
    "INTEGRITY_ATTACKS",
    "RUN_ATTACKS",
    "AttackWorld",
    "ByzantineAttack",
    "Case",
    "PoisoningAttack",
    "RunAttack",
    "byzantine_state",
    "make_world",
    "run_attack_suite",
    "sample_state",
    "tamper",
]

RUN_ID = "run-attack-suite"
ROUND = 5  # the round the server is in
NODE = "node-a"  # the transport node client "a" sends from
MAX_EXAMPLES = 1000  # what every world client registered


@dataclass
class AttackWorld:
    """Keys, a registry and a server policy shared by all cases."""

    scheme: str
    mode: Mode
    registry: KeyRegistry
    a: ClientKey  # the honest client whose update is attacked
    b: ClientKey  # another registered client
    revoked: ClientKey
    rotated_old: ClientKey  # retired key past its grace window
    unknown: ClientKey  # never registered
    classical: ClientKey  # a registered key of a weaker scheme outside the policy (downgrade)
    state: dict[str, np.ndarray]
    policy: ServerPolicy  # the server's policy: only the run's scheme

    def honest(self, **kw: Any) -> SignedUpdate:
        """Client a's validly signed update for this run and round; ``kw`` overrides any
        argument of :func:`~pqc_fl.sign.sign_update` (plus ``key`` and ``state``)."""
        key = kw.pop("key", self.a)
        state = kw.pop("state", self.state)
        args: dict[str, Any] = dict(
            scheme=key.scheme,
            secret_key=key.secret_key,
            key_id=key.key_id,
            client_id=key.client_id,
            run_id=RUN_ID,
            round=ROUND,
            num_examples=128,
            metrics={"train_loss": 0.25, "train_acc": 0.9},
            mode=self.mode,
            node=NODE,
        )
        args.update(kw)
        return sign_update(state, **args)

    def verify(
        self,
        u: SignedUpdate | bytes,
        guard: ReplayGuard | None = None,
        *,
        round: int = ROUND,
        node: str | None = NODE,
    ) -> Reason:
        """The verdict of a server in ``round`` receiving ``u`` from ``node`` (fresh guard: None;
        ``node=None``: a transport that cannot name the sender)."""
        return verify_update(
            u,
            registry=self.registry,
            run_id=RUN_ID,
            round=round,
            guard=guard or ReplayGuard(),
            schema=schema_of(self.state),
            policy=self.policy,
            node=node,
        ).reason


def sample_state(seed: int = 0, sizes: tuple[int, ...] = (64, 32, 10)) -> dict[str, np.ndarray]:
    """A small MLP-shaped float32 update."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        out[f"{i}.weight"] = rng.standard_normal((n_out, n_in), dtype=np.float32)
        out[f"{i}.bias"] = rng.standard_normal(n_out, dtype=np.float32)
    return out


def make_world(scheme: str = "ml-dsa-44", mode: Mode = "digest", seed: int = 0) -> AttackWorld:
    """Fresh keys of every kind the cases need, registered (client a from node ``NODE``)."""
    reg = KeyRegistry()
    a, b, rev, old = (generate_client_key(c, scheme) for c in ("a", "b", "c", "d"))
    classical = generate_client_key("e", "ed25519" if scheme != "ed25519" else "ecdsa-p256")
    reg.register_client_key(a, max_examples=MAX_EXAMPLES, node=NODE)
    for k in (b, rev, old, classical):
        reg.register_client_key(k, max_examples=MAX_EXAMPLES)
    reg.revoke(rev.key_id)
    new = generate_client_key("d", scheme)
    reg.rotate(client_id="d", key_id=new.key_id, public_key=new.public_key, round=2, grace_rounds=1)
    return AttackWorld(
        scheme,
        mode,
        reg,
        a,
        b,
        rev,
        old,
        generate_client_key("a", scheme),
        classical,
        sample_state(seed),
        ServerPolicy.only(scheme, allowed_modes=frozenset({mode})),
    )


def _env(u: SignedUpdate, **changes: Any) -> SignedUpdate:
    return dataclasses.replace(u, envelope=dataclasses.replace(u.envelope, **changes))


def _flip_tensor(u: SignedUpdate) -> SignedUpdate:
    tensors = {k: v.copy() for k, v in u.tensors.items()}
    name = sorted(tensors)[0]
    raw = tensors[name].reshape(-1).view(np.uint8)
    raw[secrets.randbelow(raw.size)] ^= 1 << secrets.randbelow(8)
    return dataclasses.replace(u, tensors=tensors)


def _flip_metric(u: SignedUpdate) -> SignedUpdate:
    (k, v), *rest = u.envelope.metrics
    bits = np.frombuffer(np.float64(v).tobytes(), np.uint64)[0] ^ np.uint64(1)
    return _env(u, metrics=((k, float(np.uint64(bits).view(np.float64))), *rest))


def _sig(u: SignedUpdate, sig: bytes) -> SignedUpdate:
    return dataclasses.replace(u, signature=sig)


def _garble(sig: bytes) -> bytes:
    b = bytearray(sig)
    b[len(b) // 3] ^= 0x5A
    return bytes(b)


def _wrong_context(w: AttackWorld) -> SignedUpdate:
    """Signed by the right key over the right message, but under another context string."""
    u = w.honest()
    msg = b"".join(signed_message(u.envelope, u.tensors))
    s = get_scheme(w.a.scheme)
    return _sig(u, s.sign(w.a.secret_key, msg, CONTEXT + b"/other-app"))


def _downgrade_by_policy(w: AttackWorld) -> SignedUpdate:
    """A validly signed update from a registered classical key, which the server's policy refuses."""
    return w.honest(key=w.classical, mode="digest")


def _resigned(w: AttackWorld, **changes: Any) -> SignedUpdate:
    """Client a's update with envelope fields changed and validly re-signed with a's own key: a
    modified client sending what :func:`~pqc_fl.sign.sign_update` itself refuses to sign."""
    u = w.honest()
    env = dataclasses.replace(u.envelope, **changes)
    sig = sign_envelope(get_scheme(w.a.scheme), w.a.secret_key, env, u.tensors)
    return dataclasses.replace(u, envelope=env, signature=sig)


def _with(w: AttackWorld, name: str, value: Any) -> SignedUpdate:
    """Client a's validly signed update with tensor ``name`` replaced (or added) by ``value``."""
    return w.honest(state={**w.state, name: value})


def _poke(w: AttackWorld, value: float) -> SignedUpdate:
    t = w.state["0.weight"].copy()
    t.reshape(-1)[::7] = value
    return _with(w, "0.weight", t)


def _many_records(w: AttackWorld) -> bytes:
    """40,000 empty tensor records (1.2 MB) behind a valid header and a garbage signature."""
    return garbage_record_blob(w.honest(), 40_000)


def garbage_record_blob(u: SignedUpdate, records: int) -> bytes:
    """``u``'s header with a garbled signature, followed by ``records`` empty tensor records."""
    head = u.to_bytes()[: len(u.to_bytes()) - sum(len(bytes(c)) for c in tensor_stream(u.tensors))]
    head = head[: -len(u.signature)] + _garble(u.signature)
    recs = [
        struct.pack(">H", 9) + f"t{i:08d}".encode() + b"\x03<f4\x01" + struct.pack(">QQ", 0, 0)
        for i in range(records)
    ]
    return head + struct.pack(">I", records) + b"".join(recs)


Attack = Callable[[AttackWorld], SignedUpdate | bytes]


class Case(NamedTuple):
    """One attack: what it sends, the reason it must get, and the sender the transport names."""

    make: Attack  # the forged update (or bytes) in a world
    digest_reason: Reason  # expected reason in mode "digest"
    other_reason: Reason  # expected reason in modes "full" and "mu"
    sender: str | None = NODE  # the node the server sees it from (None: the transport knows none)


ATTACKS: dict[str, Case] = {
    "tensor_bitflip": Case(
        lambda w: _flip_tensor(w.honest()),
        Reason.DIGEST_MISMATCH,
        Reason.BAD_SIGNATURE,
    ),
    "tensor_swap": Case(
        lambda w: dataclasses.replace(w.honest(), tensors=w.honest(state=sample_state(7)).tensors),
        Reason.DIGEST_MISMATCH,
        Reason.BAD_SIGNATURE,
    ),
    "metric_bitflip": Case(
        lambda w: _flip_metric(w.honest()),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "num_examples_bitflip": Case(
        lambda w: _env(u := w.honest(), num_examples=u.envelope.num_examples ^ (1 << 20)),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "replay_earlier_round": Case(
        lambda w: w.honest(round=ROUND - 1),
        Reason.ROUND_MISMATCH,
        Reason.ROUND_MISMATCH,
    ),
    "replay_earlier_round_relabelled": Case(
        lambda w: _env(w.honest(round=ROUND - 1), round=ROUND),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "replay_other_run": Case(
        lambda w: w.honest(run_id="another-run"),
        Reason.RUN_MISMATCH,
        Reason.RUN_MISMATCH,
    ),
    "relabel_client": Case(
        lambda w: _env(w.honest(), client_id="b"),
        Reason.KEY_CLIENT_MISMATCH,
        Reason.KEY_CLIENT_MISMATCH,
    ),
    "relabel_client_and_key": Case(
        lambda w: _env(w.honest(), client_id="b", key_id=w.b.key_id),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "scheme_downgrade_field": Case(
        lambda w: _env(w.honest(), scheme=w.classical.scheme),
        Reason.SCHEME_MISMATCH,
        Reason.SCHEME_MISMATCH,
    ),
    "scheme_downgrade_classical_key": Case(
        _downgrade_by_policy,
        Reason.SCHEME_NOT_ALLOWED,
        Reason.SCHEME_NOT_ALLOWED,
    ),
    "mode_switch": Case(
        lambda w: _env(w.honest(), mode="full" if w.mode == "digest" else "digest", digest=""),
        Reason.MODE_NOT_ALLOWED,
        Reason.MODE_NOT_ALLOWED,  # the policy allows the run's mode only
    ),
    "hash_swap": Case(
        lambda w: _env(w.honest(), hash="blake3"),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "wrong_context": Case(_wrong_context, Reason.BAD_SIGNATURE, Reason.BAD_SIGNATURE),
    "truncated_signature": Case(
        lambda w: _sig(u := w.honest(), u.signature[:-1]),
        Reason.BAD_SIGNATURE_LENGTH,
        Reason.BAD_SIGNATURE_LENGTH,
    ),
    "garbled_signature": Case(
        lambda w: _sig(u := w.honest(), _garble(u.signature)),
        Reason.BAD_SIGNATURE,
        Reason.BAD_SIGNATURE,
    ),
    "empty_signature": Case(
        lambda w: _sig(w.honest(), b""),
        Reason.BAD_SIGNATURE_LENGTH,
        Reason.BAD_SIGNATURE_LENGTH,
    ),
    "unknown_key": Case(lambda w: w.honest(key=w.unknown), Reason.UNKNOWN_KEY, Reason.UNKNOWN_KEY),
    "revoked_key": Case(lambda w: w.honest(key=w.revoked), Reason.REVOKED_KEY, Reason.REVOKED_KEY),
    "expired_rotated_key": Case(
        lambda w: w.honest(key=w.rotated_old),
        Reason.EXPIRED_KEY,
        Reason.EXPIRED_KEY,
    ),
    # the digest / signature is checked before any record is parsed, so a cut stream fails there
    "truncated_bytes": Case(
        lambda w: w.honest().to_bytes()[:-3],
        Reason.DIGEST_MISMATCH,
        Reason.BAD_SIGNATURE,
    ),
    "malformed_garbage": Case(
        lambda w: secrets.token_bytes(200), Reason.MALFORMED, Reason.MALFORMED
    ),
    "malformed_empty": Case(lambda w: b"", Reason.MALFORMED, Reason.MALFORMED),
    "old_envelope_version": Case(
        lambda w: _env(w.honest(), version=1),
        Reason.UNSUPPORTED_VERSION,
        Reason.UNSUPPORTED_VERSION,
    ),
    "mode_outside_policy": Case(
        lambda w: w.honest(mode="full" if w.mode == "digest" else "digest"),
        Reason.MODE_NOT_ALLOWED,
        Reason.MODE_NOT_ALLOWED,
    ),
    "too_many_records_garbage_signature": Case(_many_records, Reason.TOO_LARGE, Reason.TOO_LARGE),
    "relayed_by_another_node": Case(
        lambda w: w.honest(node="node-evil"),
        Reason.NODE_MISMATCH,
        Reason.NODE_MISMATCH,
    ),
    # insiders: signed validly with a's own key
    "insider_nan": Case(lambda w: _poke(w, float("nan")), Reason.NON_FINITE, Reason.NON_FINITE),
    "insider_inf": Case(lambda w: _poke(w, float("-inf")), Reason.NON_FINITE, Reason.NON_FINITE),
    "insider_huge_3e38": Case(lambda w: _poke(w, 3e38), Reason.OUT_OF_RANGE, Reason.OUT_OF_RANGE),
    "insider_inflate_examples": Case(
        lambda w: w.honest(num_examples=2**53),
        Reason.EXAMPLES_OVER_CAP,
        Reason.EXAMPLES_OVER_CAP,
    ),
    "insider_extra_tensor": Case(
        lambda w: _with(w, "extra", np.zeros(3, np.float32)),
        Reason.SCHEMA_MISMATCH,
        Reason.SCHEMA_MISMATCH,
    ),
    "insider_missing_tensor": Case(
        lambda w: w.honest(state={k: v for k, v in w.state.items() if k != "0.bias"}),
        Reason.SCHEMA_MISMATCH,
        Reason.SCHEMA_MISMATCH,
    ),
    "insider_dtype_change": Case(
        lambda w: _with(w, "0.bias", w.state["0.bias"].astype(np.float64)),
        Reason.SCHEMA_MISMATCH,
        Reason.SCHEMA_MISMATCH,
    ),
    "insider_shape_change": Case(
        lambda w: _with(w, "0.bias", w.state["0.bias"].reshape(1, -1)),
        Reason.SCHEMA_MISMATCH,
        Reason.SCHEMA_MISMATCH,
    ),
    "insider_zero_examples": Case(
        lambda w: _resigned(w, num_examples=0), Reason.NO_EXAMPLES, Reason.NO_EXAMPLES
    ),
    "insider_negative_examples": Case(
        lambda w: _resigned(w, num_examples=-1), Reason.MALFORMED, Reason.MALFORMED
    ),
    "insider_fractional_examples": Case(
        lambda w: _resigned(w, num_examples=1.5), Reason.MALFORMED, Reason.MALFORMED
    ),
    "insider_nan_metric": Case(
        lambda w: w.honest(metrics={"train_loss": float("nan")}),
        Reason.NON_FINITE_METRIC,
        Reason.NON_FINITE_METRIC,
    ),
    "insider_inf_metric": Case(
        lambda w: w.honest(metrics={"train_acc": 0.9, "train_loss": float("-inf")}),
        Reason.NON_FINITE_METRIC,
        Reason.NON_FINITE_METRIC,
    ),
    "insider_huge_metric": Case(
        lambda w: w.honest(metrics={"train_loss": 1e300}),
        Reason.METRIC_OUT_OF_RANGE,
        Reason.METRIC_OUT_OF_RANGE,
    ),
    # the transport names no sender: a's update claiming another node than a's registered one
    "insider_unbound_node_claim": Case(
        lambda w: w.honest(node="node-b"), Reason.NODE_MISMATCH, Reason.NODE_MISMATCH, None
    ),
}


def _stateful_row(name: str, w: AttackWorld) -> dict[str, Any]:
    """Attacks that need the server's memory: the first update is accepted, the second must not be."""
    guard = ReplayGuard()
    first = w.honest()
    second: SignedUpdate | bytes
    if name == "replay_same_round":  # the accepted update again, byte for byte
        second, node = first.to_bytes(), NODE
    elif name == "double_submission":  # a second, different, validly signed update of a
        second, node = w.honest(state=sample_state(99)), NODE
    else:  # "node_switch": next round, a's key used from another node (signed for that node)
        second, node = w.honest(round=ROUND + 1, node="node-evil"), "node-evil"
    ok = w.verify(first, guard)
    got = w.verify(second, guard, round=ROUND + (name == "node_switch"), node=node)
    want = STATEFUL[name]
    return {
        "attack": name,
        "expected": str(want),
        "got": str(got),
        "rejected": got != Reason.OK and ok == Reason.OK,
        "as_expected": got == want,
    }


STATEFUL = {
    "replay_same_round": Reason.REPLAY,
    "double_submission": Reason.DUPLICATE_SUBMISSION,
    "node_switch": Reason.NODE_MISMATCH,
}


def expected_reason(name: str, mode: str) -> Reason:
    """The reason case ``name`` must get in signing mode ``mode``."""
    case = ATTACKS[name]
    return case.digest_reason if mode == "digest" else case.other_reason


def run_attack_suite(
    scheme: str = "ml-dsa-44", mode: Mode = "digest", *, honest: int = 100, seed: int = 0
) -> dict[str, Any]:
    """Run every case (through the wire format too) and ``honest`` honest updates.

    Returns:
        ``{"cases": [{"attack", "expected", "got", "rejected", "as_expected"}], "honest": n,
        "false_rejections": k, "rejection_rate": r}``; ``rejection_rate`` counts only cases
        rejected with their expected reason.
    """
    w = make_world(scheme, mode, seed)
    rows: list[dict[str, Any]] = []
    for name, case in ATTACKS.items():
        forged = case.make(w)
        got = w.verify(forged, node=case.sender)
        if isinstance(forged, SignedUpdate):  # the same verdict after a trip over the wire
            wire = w.verify(forged.to_bytes(), node=case.sender)
            got = got if wire == got else wire
        want = expected_reason(name, mode)
        rows.append(
            {
                "attack": name,
                "expected": str(want),
                "got": str(got),
                "rejected": got != Reason.OK,
                "as_expected": got == want,
            }
        )
    rows += [_stateful_row(name, w) for name in STATEFUL]
    false_rejections = 0
    guard = ReplayGuard()
    for i in range(honest):  # one update per round of client a, as in a real run
        u = w.honest(
            state=sample_state(seed + 1 + i % 50),
            num_examples=1 + i % MAX_EXAMPLES,
            round=ROUND + i,
        )
        if w.verify(u.to_bytes() if i % 2 else u, guard, round=ROUND + i) != Reason.OK:
            false_rejections += 1
    rejected = sum(bool(r["rejected"]) and bool(r["as_expected"]) for r in rows)
    return {
        "scheme": scheme,
        "mode": mode,
        "cases": rows,
        "honest": honest,
        "false_rejections": false_rejections,
        "rejection_rate": rejected / len(rows),
    }


# ------------------------------------------------------------------------------------------------
# attacks a malicious client (or the wire) applies during a federated run (both engines)
# ------------------------------------------------------------------------------------------------

RunAttack = Literal[
    "none", "tensor_bitflip", "inflate_examples", "replay_previous_round", "relabel",
    "strip_signature",
]  # fmt: skip
RUN_ATTACKS: tuple[RunAttack, ...] = get_args(RunAttack)


def tamper(
    u: SignedUpdate, kind: RunAttack, *, previous: SignedUpdate | None, victim: str
) -> SignedUpdate:
    """Apply a run-time attack to a signed update after signing.

    Args:
        u: the attacker's honest signed update of this round.
        kind: one of :data:`RUN_ATTACKS`.
        previous: the attacker's signed update of the previous round (for replays), if any.
        victim: the client id a relabelled update claims to come from.
    """
    if kind == "none":
        return u
    if kind == "tensor_bitflip":
        return _flip_tensor(u)
    if kind == "inflate_examples":  # claim 1000x more data to dominate the FedAvg weights
        return _env(u, num_examples=u.envelope.num_examples * 1000)
    if kind == "replay_previous_round":
        return previous if previous is not None else u
    if kind == "relabel":
        return _env(u, client_id=victim)
    if kind == "strip_signature":
        return _sig(u, b"")
    raise ValueError(f"attack {kind!r} is not one of {RUN_ATTACKS}")


# ------------------------------------------------------------------------------------------------
# Byzantine clients: valid keys, malicious content (in-process engine)
# ------------------------------------------------------------------------------------------------

ByzantineAttack = Literal[
    "none", "double_submission", "non_finite", "huge_values", "inflate_examples", "extra_tensor",
    "scale", "sign_flip", "label_flip",
]  # fmt: skip
BYZANTINE_ATTACKS: tuple[ByzantineAttack, ...] = get_args(ByzantineAttack)
INTEGRITY_ATTACKS = BYZANTINE_ATTACKS[1:6]  # the verifier must reject these (with a reason)
PoisoningAttack = Literal["scale", "sign_flip", "label_flip"]  # well-formed, validly signed
SCALE = 10.0  # "scale": the update w - g is multiplied by this
FLIP = 4.0  # "sign_flip": the update is replaced by -FLIP (w - g)


def byzantine_state(
    kind: ByzantineAttack, local: dict[str, np.ndarray], global_: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What a Byzantine client signs instead of its trained weights ``local``.

    * ``scale``: ``g + SCALE (w - g)`` (a boosted update, as in model replacement);
    * ``sign_flip``: ``g - FLIP (w - g)`` (gradient ascent on the federated objective);
    * ``non_finite``: NaN in every 7th weight; ``huge_values``: 3e38 there;
    * ``extra_tensor``: an additional tensor, and one tensor in float64;
    * others (label_flip, inflate_examples, double_submission): the trained weights unchanged
      (their attack is in the data, the claimed example count or the number of submissions).
    """
    if kind == "scale":
        return {k: global_[k] + np.float32(SCALE) * (local[k] - global_[k]) for k in local}
    if kind == "sign_flip":
        return {k: global_[k] - np.float32(FLIP) * (local[k] - global_[k]) for k in local}
    if kind in ("non_finite", "huge_values"):
        out = {k: v.copy() for k, v in local.items()}
        for v in out.values():
            if v.dtype.kind == "f":
                v.reshape(-1)[::7] = np.nan if kind == "non_finite" else 3e38
        return out
    if kind == "extra_tensor":
        first = sorted(local)[0]
        return {**local, first: local[first].astype(np.float64), "backdoor": np.ones(4, np.float32)}
    return dict(local)
