"""Measurements behind the cost tables: primitives, round-time shares, verification throughput, bandwidth.

Every timing is a median with its interquartile range over repeated calls (``perf_counter_ns``, one
warm-up call, garbage collection off), on whatever CPU runs it; :func:`hardware` records which.
The functions return plain rows (lists of dicts) that ``benchmarks/bench_pqc_*.py``, ``qhybrid fl
bench`` and the reproduce stage turn into JSON and Markdown tables.
"""

from __future__ import annotations

import functools
import gc
import os
import platform
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from pqc_fl.envelope import Hash, Mode, canonical_tensors, state_digest, tensor_stream
from pqc_fl.keys import KeyRegistry, generate_client_key
from pqc_fl.policy import ReplayGuard, ServerPolicy, schema_of
from pqc_fl.schemes import SchemeError, available_schemes, get_scheme, scheme_backends
from pqc_fl.sign import sign_update
from pqc_fl.verify import verify_update

__all__ = [
    "bandwidth_table",
    "hardware",
    "primitive_table",
    "round_cost_table",
    "time_call",
    "verify_throughput",
]


def hardware() -> dict[str, Any]:
    """CPU, core count, load and library versions, stored with every benchmark result."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    libs: dict[str, str | None] = {}
    for pkg in ("cryptography", "pqcrypto", "py-fn-dsa", "flwr", "torch", "numpy"):
        try:
            libs[pkg] = version(pkg)
        except PackageNotFoundError:
            libs[pkg] = None
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        libs["openssl"] = backend.openssl_version_text()
    except Exception:  # noqa: BLE001
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1min": load,
        "python": platform.python_version(),
        "libraries": libs,
    }


def time_call(
    fn: Callable[[], Any], *, budget_s: float = 0.5, min_reps: int = 3, max_reps: int = 1000
) -> dict[str, float]:
    """Median and IQR (seconds) of ``fn()`` over as many calls as fit in ``budget_s``."""
    fn()  # warm-up (first-call allocations, lazy imports)
    samples: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        t_end = time.perf_counter() + budget_s
        while len(samples) < max_reps and (len(samples) < min_reps or time.perf_counter() < t_end):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) * 1e-9)
    finally:
        if enabled:
            gc.enable()
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(samples)}


def _fmt_ms(t: dict[str, float]) -> str:
    return f"{1e3 * t['median']:.3g} ms [{1e3 * t['q1']:.3g}–{1e3 * t['q3']:.3g}]"


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def primitive_table(
    schemes: Sequence[str] | None = None,
    *,
    update_bytes: int = 0,
    budget_s: float = 0.3,
    all_backends: bool = True,
) -> list[dict[str, Any]]:
    """keygen / sign / verify of every scheme and backend on a 32-byte digest, 1 MiB and a whole update.

    Args:
        schemes: names (default: every available scheme).
        update_bytes: size of the "whole update" message (0 = skip that column).
        budget_s: time budget per cell; at least 3 calls are made regardless.
        all_backends: also time the non-default backends (e.g. ML-DSA on pqcrypto).
    """
    messages = {"32B": secrets.token_bytes(32), "1MiB": secrets.token_bytes(1 << 20)}
    if update_bytes:
        messages["update"] = secrets.token_bytes(update_bytes)
    ctx = b"qhybrid-fl/v1/update"
    rows = []
    for name in schemes or available_schemes():
        backends = scheme_backends(name) if all_backends else scheme_backends(name)[:1]
        for backend in backends:
            s = get_scheme(name, backend)
            sk, pk = s.keygen()
            row: dict[str, Any] = {
                "scheme": name,
                "backend": backend,
                "pq": s.post_quantum,
                "nist_level": s.nist_level,
                "pk_B": s.public_key_size,
                "sk_B": len(sk),
                "sig_B": s.signature_size,
            }
            row["keygen"] = time_call(s.keygen, budget_s=budget_s)
            for label, msg in messages.items():
                try:
                    sig = s.sign(sk, msg, ctx)
                except SchemeError as err:  # e.g. pqcrypto's 1 MiB ML-DSA message limit
                    row[f"sign_{label}"] = row[f"verify_{label}"] = None
                    row.setdefault("note", str(err).split(";")[0])
                    continue
                assert s.verify(pk, msg, sig, ctx)
                row[f"sign_{label}"] = time_call(_bind(s.sign, sk, msg, ctx), budget_s=budget_s)
                verify = _bind(s.verify, pk, msg, sig, ctx)
                row[f"verify_{label}"] = time_call(verify, budget_s=budget_s)
            rows.append(row)
    return rows


def primitive_markdown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten :func:`primitive_table` rows into "median [q1–q3]" strings for reports."""
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if not isinstance(v, dict)}
        flat.update({k: _fmt_ms(v) for k, v in r.items() if isinstance(v, dict)})
        out.append(flat)
    return out


# ------------------------------------------------------------------------------------------------
# crypto share of round time
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _client_update(
    model_name: str, steps: int, seed: int
) -> tuple[dict[str, np.ndarray], int, float]:
    """One real local training round on digits; returns (state, num_examples, train seconds).

    Cached: every table of a process (e.g. SHA-256 and BLAKE3 digests) uses the same measured
    training time, so their shares differ only by what they measure.
    """
    import torch

    from pqc_fl.config import LocalTrainConfig
    from pqc_fl.task import build_model, digits, local_train, partition

    torch.set_num_threads(1)
    x, y, _, _ = digits(seed)
    idx = partition(y, 10, seed=seed)[0]
    # warm-up: first-call costs (allocator, autograd, optimizer state) are not a round's cost
    local_train(build_model(model_name, seed), x[idx], y[idx], LocalTrainConfig(steps=2), seed=seed)
    model = build_model(model_name, seed)
    t0 = time.perf_counter()
    state, n, _ = local_train(model, x[idx], y[idx], LocalTrainConfig(steps=steps), seed=seed)
    return {k: v.copy() for k, v in state.items()}, n, time.perf_counter() - t0


def round_cost_table(
    models: Sequence[str] = ("mlp", "cnn", "mlp-10m"),
    clients: Sequence[int] = (2, 10, 100),
    *,
    scheme: str = "ml-dsa-44",
    mode: Mode = "digest",
    hash: Hash = "sha256",
    local_steps: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Share of a synchronous FedAvg round spent on hashing and on signatures.

    Model of a round (clients are separate machines working in parallel; one server):

    * client time = local training (real, ``local_steps`` AdamW steps on digits) + digest + sign;
    * server time = for each of the N updates: verify signature + recompute digest + parse bytes
      and check schema / values (``server_parse_s``) + add into the weighted average (all
      measured on N real, distinct signed updates);
    * round time = client time + server time (communication excluded: it is deployment-specific).

    Signing and verification are reported apart from hashing (digest on both sides), because the
    hash cost grows with the model while the signature cost does not.
    """
    rows = []
    for model_name in models:
        state, n, train_s = _client_update(model_name, local_steps, seed)
        tensors = canonical_tensors(state)
        for n_clients in clients:
            server = _server_costs(tensors, n, n_clients, scheme, mode, hash)
            client_s = train_s + server["client_digest_s"] + server["client_sign_s"]
            server_s = sum(server[k] for k in ("parse", "verify", "hash", "aggregate"))
            round_s = client_s + server_s
            sign_verify = server["client_sign_s"] + server["verify"]
            hashing = server["client_digest_s"] + server["hash"]
            rows.append(
                {
                    "model": model_name,
                    "params": sum(a.nbytes for a in tensors.values()) // 4,
                    "update_MB": sum(a.nbytes for a in tensors.values()) / 1e6,
                    "clients": n_clients,
                    "scheme": scheme,
                    "mode": mode,
                    "hash": hash if mode == "digest" else "",
                    "client_train_s": train_s,
                    "client_digest_s": server["client_digest_s"],
                    "client_sign_s": server["client_sign_s"],
                    "server_parse_s": server["parse"],
                    "server_verify_s": server["verify"],
                    "server_hash_s": server["hash"],
                    "server_aggregate_s": server["aggregate"],
                    "round_s": round_s,
                    "sign_verify_share_pct": 100 * sign_verify / round_s,
                    "hash_share_pct": 100 * hashing / round_s,
                    "crypto_share_pct": 100 * (sign_verify + hashing) / round_s,
                    "server_crypto_share_pct": 100 * (server["verify"] + server["hash"]) / server_s,
                }
            )
    return rows


def _server_costs(
    tensors: dict[str, np.ndarray], n: int, n_clients: int, scheme: str, mode: Mode, hash: Hash
) -> dict[str, float]:
    """``n_clients`` real, distinct updates signed (median client digest / sign seconds) and
    verified from their wire bytes, then averaged (server parse, verify, hash, aggregate seconds,
    summed over the updates)."""
    reg = KeyRegistry()
    keys = [generate_client_key(f"c{i}", scheme) for i in range(n_clients)]
    for k in keys:
        reg.register_client_key(k, max_examples=n)
    schema = schema_of(tensors)
    guard = ReplayGuard()
    smallest = min(tensors, key=lambda k: tensors[k].size)
    digest_s, sign_s = [], []
    cost = {"parse": 0.0, "verify": 0.0, "hash": 0.0, "aggregate": 0.0}
    acc: dict[str, np.ndarray] = {}
    for i, k in enumerate(keys):
        # distinct updates that share the big tensors (same hashing work, bounded memory)
        mine = dict(tensors)
        mine[smallest] = tensors[smallest] + np.float32(i)
        u = sign_update(
            mine,
            scheme=scheme,
            secret_key=k.secret_key,
            key_id=k.key_id,
            client_id=k.client_id,
            run_id="bench",
            round=1,
            num_examples=n,
            mode=mode,
            hash=hash,
        )
        digest_s.append(u.timings["digest"])
        sign_s.append(u.timings["sign"])
        blob = u.to_bytes()
        t0 = time.perf_counter()  # the server gets bytes: header, signature, hash, parse
        v = verify_update(
            blob,
            registry=reg,
            run_id="bench",
            round=1,
            guard=guard,
            schema=schema,
            policy=ServerPolicy.only(scheme),
        )
        if not v.ok or v.update is None:
            raise RuntimeError(f"an honest benchmark update was refused: {v}")
        t2 = time.perf_counter()
        w = np.float32(1.0 / n_clients)
        for name, arr in v.update.tensors.items():
            if name in acc:
                acc[name] += arr * w
            else:
                acc[name] = arr * w
        cost["aggregate"] += time.perf_counter() - t2
        cost["parse"] += t2 - t0 - v.verify_seconds - v.hash_seconds  # parse + checks
        cost["verify"] += v.verify_seconds
        cost["hash"] += v.hash_seconds
        del blob, v
    cost["client_digest_s"] = float(np.median(digest_s))
    cost["client_sign_s"] = float(np.median(sign_s))
    return cost


# ------------------------------------------------------------------------------------------------
# verification throughput with a process pool
# ------------------------------------------------------------------------------------------------

_WORKER_REGISTRY: KeyRegistry | None = None


def _init_worker(registry: KeyRegistry) -> None:
    global _WORKER_REGISTRY
    _WORKER_REGISTRY = registry


def _verify_chunk(blobs: list[bytes]) -> int:
    """Verified updates in ``blobs`` (a fresh replay guard each: many updates share a client)."""
    assert _WORKER_REGISTRY is not None
    return sum(
        verify_update(
            b,
            registry=_WORKER_REGISTRY,
            run_id="bench",
            round=1,
            guard=ReplayGuard(),
            schema=None,
            policy=ServerPolicy.only(_WORKER_REGISTRY.records()[0].scheme),
        ).ok
        for b in blobs
    )


def _noop(_: int) -> int:
    return os.getpid()


def verify_throughput(
    scheme: str = "ml-dsa-44",
    *,
    n_updates: int = 2000,
    workers: Sequence[int] = (1, 2),
    model_params: int = 4810,
    n_keys: int = 100,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Updates verified per second by a pool of 1, 2, ... processes (fork start method).

    Updates are small (``model_params`` float32, the digits MLP) so that the signature check, not
    hashing, dominates: this measures how the server's verification scales with cores. Each
    pool size is timed ``repeats`` times, interleaved; the median rate is reported, and speed-up
    is relative to the smallest pool (normally 1 worker).
    """
    import multiprocessing as mp

    keys = [generate_client_key(f"c{i}", scheme) for i in range(n_keys)]
    reg = KeyRegistry()
    for k in keys:
        reg.register_client_key(k, max_examples=1)
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(n_updates):
        k = keys[i % n_keys]
        st = {"w": rng.standard_normal(model_params, dtype=np.float32)}
        blobs.append(
            sign_update(
                st,
                scheme=scheme,
                secret_key=k.secret_key,
                key_id=k.key_id,
                client_id=k.client_id,
                run_id="bench",
                round=1,
                num_examples=1,
            ).to_bytes()
        )
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pools = {
        w: ProcessPoolExecutor(w, mp_context=ctx, initializer=_init_worker, initargs=(reg,))
        for w in workers
    }
    rates: dict[int, list[float]] = {w: [] for w in workers}
    try:
        for w, pool in pools.items():
            list(pool.map(_noop, range(4 * w)))  # start every worker before timing
        for _ in range(
            repeats
        ):  # interleaved (1, 2, ..., 1, 2, ...) so machine noise hits all alike
            for w, pool in pools.items():
                chunk = max(1, n_updates // (8 * w))
                parts = [blobs[i : i + chunk] for i in range(0, n_updates, chunk)]
                t0 = time.perf_counter()
                ok = sum(pool.map(_verify_chunk, parts))
                rates[w].append(n_updates / (time.perf_counter() - t0))
                assert ok == n_updates
    finally:
        for pool in pools.values():
            pool.shutdown()
    base = float(np.median(rates[workers[0]])) * workers[0]  # per-worker rate of the smallest pool
    rows = []
    for w in workers:
        rate = float(np.median(rates[w]))
        rows.append(
            {
                "scheme": scheme,
                "workers": w,
                "updates": n_updates,
                "repeats": repeats,
                "updates_per_s": rate,
                "updates_per_s_q1_q3": np.percentile(rates[w], [25, 75]).tolist(),
                "speedup": rate / base,
                "efficiency": rate / base / w,
                "cores": os.cpu_count(),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------
# bandwidth
# ------------------------------------------------------------------------------------------------


def bandwidth_table(
    schemes: Sequence[str] | None = None, model_params: Sequence[tuple[str, int]] = ()
) -> list[dict[str, Any]]:
    """Bytes a signature adds to one update (envelope + signature + framing), as % of the update.

    ``model_params``: (model name, parameter count) pairs; float32 updates are assumed. The public
    key is sent once per client (at registration), so it is listed apart.
    """
    from pqc_fl.task import build_model, num_parameters

    models = list(model_params) or [
        (m, num_parameters(build_model(m))) for m in ("mlp", "cnn", "mlp-10m")
    ]
    rows = []
    for name in schemes or available_schemes():
        s = get_scheme(name)
        sk, pk = s.keygen()
        u = sign_update(
            {"w": np.zeros(4, np.float32)},
            scheme=s,
            secret_key=sk,
            key_id="k" * 32,
            client_id="client-000",
            run_id="flwr-1234567890",
            round=100,
            num_examples=1000,
            metrics={"train_loss": 0.1},
        )
        added = u.overhead_bytes
        row: dict[str, Any] = {
            "scheme": name,
            "sig_B": s.signature_size,
            "added_B": added,
            "pk_once_B": len(pk),
        }
        for m, p in models:
            plain = (
                sum(len(bytes(c)) for c in tensor_stream({"w": np.zeros(0, np.float32)})) + 4 * p
            )
            row[f"{m}_pct"] = 100 * added / plain
        rows.append(row)
    return rows


def digest_cost(params: int, reps: int = 5) -> dict[str, float]:
    """SHA-256 state digest time for a float32 update of ``params`` parameters."""
    st = canonical_tensors({"w": np.ones(params, np.float32)})
    return time_call(lambda: state_digest(st), budget_s=0.2, min_reps=reps)
