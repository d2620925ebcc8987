"""Dataset generation: disjoint splits, exact targets, schema, atomic resumable byte-identical output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qhybrid import QHybridError
from quantum import GroverProblem, build_tokenizer, exact_distribution, render
from quantum import dataset as ds_mod
from quantum.dataset import RECORD_FIELDS, SPLITS, DatasetSpec, SplitSpec, generate_dataset

SMALL = DatasetSpec(
    seed=3,
    train=SplitSpec(2, 5, 1, 3, 60, off_optimal=0.3),
    test_id=SplitSpec(2, 5, 1, 3, 12),
    test_ood_n=SplitSpec(8, 14, 1, 2, 8),
    test_ood_t=SplitSpec(4, 6, 4, 5, 8),
    test_ood_k=SplitSpec(2, 5, 1, 3, 10, off_optimal=1.0),
    oracle_styles=("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"),
    aer_check_per_split=5,
    shard_size=25,
)


def read_split(root: Path, split: str) -> list[dict]:
    lines = []
    for f in sorted((root / "data" / split).glob("*.jsonl")):
        lines += f.read_text().splitlines()
    return [json.loads(line) for line in lines]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grover") / "ds"
    info = generate_dataset(SMALL, root)
    assert info.problems == {
        "train": 60,
        "test_id": 12,
        "test_ood_n": 8,
        "test_ood_t": 8,
        "test_ood_k": 10,
    }
    assert info.records == 2 * 98
    return root


def test_splits_are_disjoint_on_problem_key_and_marked_set(small):
    keys: dict[str, set] = {}
    sets: dict[str, set] = {}
    for split in SPLITS:
        recs = read_split(small, split)
        keys[split] = {r["problem_id"] for r in recs}
        sets[split] = {(r["n_qubits"], tuple(r["marked"])) for r in recs}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not keys[a] & keys[b] and not sets[a] & sets[b], (a, b)


def test_split_ranges_and_k_regimes(small):
    for r in read_split(small, "test_ood_n"):
        assert 8 <= r["n_qubits"] <= 14
    for r in read_split(small, "test_ood_t"):
        assert 4 <= r["n_marked"] <= 5
    for r in read_split(small, "test_ood_k"):
        assert r["iterations"] != r["optimal_iterations"] and r["iteration_rule"] == "explicit"
    train = read_split(small, "train")
    assert all(2 <= r["n_qubits"] <= 5 for r in train)
    off = [r["iterations"] != r["optimal_iterations"] for r in train[::2]]  # 2 renderings
    assert 0.1 < sum(off) / len(off) < 0.6  # the 30% off-optimal share
    for split in SPLITS:  # Grover amplifies: 2t < 2**n everywhere
        assert all(2 * r["n_marked"] < 2 ** r["n_qubits"] for r in read_split(small, split))


def test_no_problem_occurs_twice(small):
    for split in SPLITS:
        keys = [r["problem_id"] for r in read_split(small, split) if r["rendering"] == "compact"]
        assert len(keys) == len(set(keys)), split


def test_test_id_pairs_are_trained_on_and_styles_mix(small):
    pairs = lambda split: {(r["n_qubits"], r["n_marked"]) for r in read_split(small, split)}  # noqa: E731
    assert pairs("test_id") <= pairs("train")
    assert (2, 1) in pairs("test_id")  # n = 2 has only 4 marked sets: the test takes at most 2
    styles = {r["oracle_style"] for r in read_split(small, "train")}
    assert styles == {"x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"}


def test_half_of_each_small_pool_is_left_for_training():
    from quantum.dataset import draw_splits

    spec = DatasetSpec(
        train=SplitSpec(2, 2, 1, 1, 10),
        test_id=SplitSpec(2, 2, 1, 1, 10),
        test_ood_n=SplitSpec(3, 3, 1, 1, 0),
        test_ood_t=SplitSpec(3, 3, 2, 2, 0),
        test_ood_k=SplitSpec(2, 2, 1, 1, 10, off_optimal=1.0),
    )
    splits = draw_splits(spec)
    # 4 marked sets at n = 2, t = 1: test_id and test_ood_k share 2, train gets the other 2
    assert len(splits["test_id"]) + len(splits["test_ood_k"]) == 2
    assert len(splits["train"]) == 2
    marked = [p.marked for s in splits.values() for p in s]
    assert len(marked) == len(set(marked)) == 4


def test_uncovered_test_id_pairs_are_refused_before_anything_is_written(tmp_path):
    spec = DatasetSpec(train=SplitSpec(3, 4, 1, 1, 50), test_id=SplitSpec(2, 4, 1, 1, 30))
    with pytest.raises(QHybridError, match=r"train does not cover the \(n, t\) pairs \[\(2, 1\)\]"):
        generate_dataset(spec, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_records_carry_exact_targets_renderings_and_token_counts(small):
    tok = build_tokenizer()
    checked = 0
    for split in SPLITS:
        for r in read_split(small, split):
            assert set(r) == set(RECORD_FIELDS)
            p = GroverProblem(r["n_qubits"], r["marked"], r["iterations"], r["oracle_style"])
            assert p.key == r["problem_id"]
            assert r["text"] == render(p, r["rendering"]) and r["target"] == render(p, "answer")
            assert r["n_tokens"] == len(tok(r["text"], add_special_tokens=False)["input_ids"])
            assert r["target_n_tokens"] == len(tok(r["target"])["input_ids"])
            if r["n_qubits"] <= 6:
                np.testing.assert_allclose(r["probs"], exact_distribution(p), atol=1e-15)
            else:
                assert r["probs"] is None
            assert r["success_probability"] == pytest.approx(r["n_marked"] * r["p_marked_each"])
            if r["aer_max_abs_diff"] is not None:
                assert r["aer_max_abs_diff"] < 1e-10
                checked += 1
    assert checked >= 2 * 5 * 3


def test_jsonl_has_sorted_keys_and_parquet_loads_with_datasets(small):
    from datasets import load_dataset

    line = (small / "data" / "train" / "shard-00000.jsonl").read_text().splitlines()[0]
    assert list(json.loads(line)) == sorted(json.loads(line))
    files = {s: str(small / "data" / s / "*.parquet") for s in SPLITS}
    dd = load_dataset("parquet", data_files=files)
    assert dd["train"].num_rows == 120
    assert dd["train"][0] == read_split(small, "train")[0]
    card = (small / "README.md").read_text()
    assert "path: data/test_ood_k/*.parquet" in card and "qubit 0 is the rightmost" in card
    prov = json.loads((small / "provenance.json").read_text())
    assert prov["seed"] == 3 and "qiskit" in prov["versions"]


def test_rerun_is_byte_identical_and_interrupted_runs_resume(small, tmp_path, monkeypatch):
    again = tmp_path / "again"
    real = ds_mod._write_shard
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # simulated crash mid-run
        return real(*args)

    monkeypatch.setattr(ds_mod, "_write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(SMALL, again)
    # only whole shards (each with its .done.json) and spec.json; no temp files
    left = [p.name for p in again.rglob("*") if p.is_file()]
    assert not [n for n in left if n.endswith(".tmp")]
    assert len([n for n in left if n.endswith(".done.json")]) == 2
    monkeypatch.setattr(ds_mod, "_write_shard", real)
    generate_dataset(SMALL, again)
    assert tree_bytes(again) == tree_bytes(small)


def test_two_workers_give_the_same_bytes(small, tmp_path):
    from dataclasses import replace

    spec = replace(SMALL, workers=2)
    generate_dataset(spec, tmp_path / "w2")
    a, b = tree_bytes(tmp_path / "w2"), tree_bytes(small)
    a.pop("spec.json"), b.pop("spec.json"), a.pop("provenance.json"), b.pop("provenance.json")
    a.pop("README.md"), b.pop("README.md")
    assert a == b


def test_noisy_aer_distributions_are_added_for_small_checked_problems(tmp_path):
    from dataclasses import replace

    spec = replace(
        SMALL,
        train=SplitSpec(2, 3, 1, 1, 4),
        test_id=SplitSpec(2, 3, 1, 1, 1),
        test_ood_n=SplitSpec(4, 4, 1, 1, 1),
        test_ood_t=SplitSpec(4, 4, 4, 4, 1),
        test_ood_k=SplitSpec(2, 3, 1, 1, 1, off_optimal=1.0),
        renderings=("compact",),
        noise_depolarizing=0.001,
        noise_max_n=3,
        parquet=False,
    )
    generate_dataset(spec, tmp_path / "noisy")
    recs = read_split(tmp_path / "noisy", "train")
    noisy = [r for r in recs if r["probs_noisy"] is not None]
    assert len(noisy) == 4
    for r in noisy:
        assert sum(r["probs_noisy"]) == pytest.approx(1.0, abs=1e-8)
        # a little noise: close to the exact distribution but not equal to it
        diff = np.abs(np.array(r["probs_noisy"]) - np.array(r["probs"])).max()
        assert 1e-6 < diff < 0.5  # ~30 cx at 1% error each after transpiling to {u, cx}


def test_other_spec_in_same_folder_is_refused(small):
    from dataclasses import replace

    with pytest.raises(QHybridError, match="different spec"):
        generate_dataset(replace(SMALL, seed=4), small)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (DatasetSpec, {"renderings": ("qasm2",)}, "unknown rendering 'qasm2'"),
        (DatasetSpec, {"renderings": ()}, "renderings is empty"),
        (DatasetSpec, {"oracle_styles": ("magic",)}, "unknown or none"),
        (DatasetSpec, {"oracle_styles": ()}, "unknown or none"),
        (DatasetSpec, {"noise_depolarizing": 0.5}, "noise_depolarizing=0.5"),
        (SplitSpec, {"n_min": 0, "n_max": 3, "t_min": 1, "t_max": 1, "count": 5}, "n_min <= n_max"),
        (SplitSpec, {"n_min": 2, "n_max": 3, "t_min": 4, "t_max": 2, "count": 5}, "t_min <= t_max"),
        (SplitSpec, {"n_min": 2, "n_max": 2, "t_min": 2, "t_max": 2, "count": 5}, "t_min=2 marked"),
        (
            SplitSpec,
            {"n_min": 2, "n_max": 2, "t_min": 1, "t_max": 1, "count": 5, "off_optimal": 1.5},
            "off_optimal=1.5",
        ),
        (
            SplitSpec,
            {
                "n_min": 2,
                "n_max": 2,
                "t_min": 1,
                "t_max": 1,
                "count": 5,
                "off_optimal": float("nan"),
            },
            "off_optimal=nan",
        ),
    ],
)
def test_bad_spec_is_a_qhybrid_error(cls, kwargs, match):
    with pytest.raises(QHybridError, match=match):
        cls(**kwargs)


def test_cli_generate_and_bad_input_exit_codes(tmp_path, capsys):
    from qhybrid.cli import main

    sets = [
        "train.count=6",
        "test_id.count=2",
        "test_ood_n.count=2",
        "test_ood_t.count=2",
        "test_ood_k.count=2",
        'renderings=["compact"]',
    ]
    argv = [
        "grover",
        "generate",
        "--out",
        str(tmp_path / "runs"),
        "--dataset-dir",
        str(tmp_path / "d"),
    ] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    assert len(read_split(tmp_path / "d", "train")) == 6
    assert main(["grover", "render", "--n", "3", "--marked", "0111"]) == 2
    assert "has 4 bits but n_qubits=3" in capsys.readouterr().err
    assert main(["grover", "generate", "--out", str(tmp_path), "--set", "train.count=-1"]) == 2
    assert main(["grover", "simulate", "--n", "3", "--marked", "011", "--backend", "x"]) == 2
