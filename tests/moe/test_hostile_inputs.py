"""Hostile inputs to ``qhybrid moe compress``: one clear error naming the file or value, exit 2,
no run folder, and the input folder byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from moe.tiny import tiny_moe
from qhybrid.cli import main


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "mixtral"
    tiny_moe("mixtral", vocab=256).save_pretrained(folder)  # H = 32, I = 64, 8 experts, top 2
    calib = root / "calib.txt"
    calib.write_text("\n\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(200)))
    return folder, calib


def _run(
    tmp_path: Path, folder: Path, calib: Path | str, *sets: str, out: Path | None = None
) -> int:
    args = ["moe", "compress", "--out", str(out or tmp_path / "runs")]
    for s in (f"model_dir='{folder}'", f"calib='{calib}'", "tokenizer='bytes'", "calib_sequences=16",
              "eval_sequences=16", "seq_len=32", "merge_to=0", *sets):  # fmt: skip
        args += ["--set", s]
    return main(args)


def _refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    folder: Path,
    calib: Path | str,
    sets: tuple[str, ...],
    match: str,
) -> None:
    before = _digest(folder)
    assert _run(tmp_path, folder, calib, *sets) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], err[-600:]
    assert not (tmp_path / "runs").exists()  # nothing written
    assert _digest(folder) == before  # the input folder untouched


SETTINGS = [
    (("merge_to=9",), "merge_to=9 exceeds the 8 experts"),
    (("drop_to=6", "merge_to=7"), "merge_to=7 exceeds drop_to=6"),
    (("drop_to=9",), "drop_to=9 does not fit"),
    (("drop_to=1",), "choose 2 <= drop_to <= 8"),
    (("avg_bits=3.0", "group_size=1000"), "group_size=1000 does not divide"),
    (("avg_bits=3.0", "group_size=24"), "group_size=24 does not divide"),
    (("avg_bits=3.0", "group_size=64"), "input width 32 of the MixtralForCausalLM experts' gate/up projection"),
    (("avg_bits=3.0", "keep_ratio=0.75"), "group_size=32 does not divide the input width 48 of the MixtralForCausalLM experts' down projection"),
    (("avg_bits=1.5",), "avg_bits=1.5 cannot be met"),
    (("avg_bits=9",), "avg_bits"),
    (("rank=64",), "rank=64 (rounded up to 64) is not below"),
    (("rank=8", "avg_bits=3.0"), "rank and avg_bits cannot be combined"),
    (("drop_rounds=2",), "drop_rounds=2 needs drop_to"),
    (("keep_ratio=0",), "keep_ratio"),
    (("storage='disk'", "avg_bits=3.0"), "'storage' = 'disk' is not one of"),
    (("seq_len=4096",), "seq_len=4096 exceeds"),
    (("save_dtype='int8'",), "'save_dtype' = 'int8' is not one of"),
    (("calib_sequences=-1",), "calib_sequences"),
]  # fmt: skip


@pytest.mark.parametrize(("sets", "match"), SETTINGS)
def test_every_bad_setting_is_refused_before_a_run_folder_exists(
    sets: tuple[str, ...],
    match: str,
    checkpoint: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, calib = checkpoint
    _refused(tmp_path, capsys, folder, calib, sets, match)


def test_switch_refuses_packed_storage_and_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "switch"
    tiny_moe("switch", vocab=256).save_pretrained(folder)
    calib = tmp_path / "c.txt"
    calib.write_text("x = 1\n" * 2000)
    for sets in (("avg_bits=3.0",), ("keep_ratio=0.5",)):
        _refused(tmp_path, capsys, folder, calib, sets, "fused SwiGLU experts")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_broken_weight_files_and_configs_name_the_file(
    checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, calib = checkpoint
    weights = folder / "model.safetensors"
    garbage = _copy(folder, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    _refused(
        tmp_path,
        capsys,
        garbage,
        calib,
        (),
        f"{garbage / 'model.safetensors'} is not a safetensors file",
    )
    truncated = _copy(folder, tmp_path / "truncated")
    (truncated / "model.safetensors").write_bytes(
        weights.read_bytes()[: weights.stat().st_size // 2]
    )
    _refused(
        tmp_path, capsys, truncated, calib, (), f"{truncated / 'model.safetensors'} is truncated"
    )
    padded = _copy(folder, tmp_path / "padded")
    (padded / "model.safetensors").write_bytes(weights.read_bytes() + b"\0" * 100)
    _refused(tmp_path, capsys, padded, calib, (), "is truncated or padded")
    empty = _copy(folder, tmp_path / "empty")
    (empty / "model.safetensors").write_bytes(b"")
    _refused(tmp_path, capsys, empty, calib, (), "is not a safetensors file")
    other = tmp_path / "other"
    tiny_moe("mixtral", vocab=256, hidden=48).save_pretrained(other)
    mismatched = _copy(folder, tmp_path / "mismatched")
    (mismatched / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    _refused(tmp_path, capsys, mismatched, calib, (), "do not fit its config")
    binary = _copy(folder, tmp_path / "binary-config")
    (binary / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    _refused(tmp_path, capsys, binary, calib, (), f"cannot read {binary / 'config.json'}")
    bert = _copy(folder, tmp_path / "bert")
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    _refused(tmp_path, capsys, bert, calib, (), "model_type 'bert', which is not a supported")
    index = _copy(folder, tmp_path / "index")
    (index / "model.safetensors").unlink()
    (index / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "shard-1.safetensors"}})
    )
    _refused(tmp_path, capsys, index, calib, (), "names shard-1.safetensors, which is missing")


def test_a_missing_or_broken_tokenizer_names_the_folder(
    checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, calib = checkpoint
    _refused(
        tmp_path, capsys, folder, calib, ("tokenizer='folder'",), f"'{folder}' has no tokenizer"
    )
    broken = _copy(folder, tmp_path / "broken-tok")
    (broken / "tokenizer_config.json").write_text('{"tokenizer_class": "NoSuchTokenizer"}')
    _refused(
        tmp_path,
        capsys,
        broken,
        calib,
        ("tokenizer='folder'",),
        f"the tokenizer in '{broken}' does not load",
    )
    _refused(
        tmp_path,
        capsys,
        folder,
        calib,
        (f"tokenizer='{tmp_path / 'nowhere'}'",),
        "has no tokenizer",
    )


def test_bad_calibration_files_name_the_file(
    checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = checkpoint
    missing = tmp_path / "missing.txt"
    _refused(tmp_path, capsys, folder, missing, (), f"calibration file {missing} does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    _refused(tmp_path, capsys, folder, empty, (), f"calibration file {empty} is empty")
    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    _refused(tmp_path, capsys, folder, binary, (), f"calibration file {binary} is binary")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 400)
    _refused(tmp_path, capsys, folder, latin, (), "is not UTF-8 text")
    _refused(
        tmp_path,
        capsys,
        folder,
        "/dev/zero",
        (),
        "calibration file /dev/zero is not a regular file",
    )
    _refused(tmp_path, capsys, folder, tmp_path, (), "is not a regular file")
    short = tmp_path / "short.txt"
    short.write_text("def f(x): return x\n" * 3)
    _refused(tmp_path, capsys, folder, short, (), "too short")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"txt": 1}\n')
    _refused(tmp_path, capsys, folder, jsonl, (), f"{jsonl}:1 has no string field 'text'")


def test_out_inside_the_input_folder_is_refused(
    checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, calib = checkpoint
    before = _digest(folder)
    assert _run(tmp_path, folder, calib, out=folder / "runs") == 2
    assert "lies inside model_dir" in capsys.readouterr().err
    assert _digest(folder) == before and not (folder / "runs").exists()
