"""Local Hugging Face checkpoints of every family through ``qhybrid moe compress``, and bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe.calibration import calibration_texts, text_batches
from moe.checkpoint import FAMILIES, load_moe_checkpoint
from moe.layers import MoEError, find_moe_layers
from moe.tiny import tiny_batch, tiny_moe
from qhybrid.cli import main

TINY = {"mixtral": "mixtral", "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe", "olmoe": "olmoe",
        "switch_transformers": "switch"}  # fmt: skip


def _save(tmp_path: Path, family: str, **kw) -> Path:
    model = tiny_moe(TINY[family], vocab=256, **kw)
    folder = tmp_path / f"ckpt-{family}"
    model.save_pretrained(folder)
    return folder


def _calib_file(tmp_path: Path) -> Path:
    path = tmp_path / "calib.jsonl"
    lines = [
        json.dumps({"text": f"def f{i}(x):\n    return x * {i} + {i % 7}  # line {i}"})
        for i in range(120)
    ]
    path.write_text("\n".join(lines))
    return path


def _compress(tmp_path: Path, folder: Path, *sets: str) -> int:
    out = [
        "--set",
        f"model_dir='{folder}'",
        "--set",
        f"calib='{_calib_file(tmp_path)}'",
        "--set",
        "calib_sequences=32",
        "--set",
        "eval_sequences=16",
        "--set",
        "seq_len=32",
        "--set",
        "merge_to=0",
        "--set",
        "tokenizer='bytes'",
    ]
    for s in sets:
        out += ["--set", s]
    return main(["moe", "compress", "--out", str(tmp_path / "runs"), *out])


def _result(tmp_path: Path) -> Path:
    return sorted((tmp_path / "runs").glob("moe-compress-*"))[-1] / "compressed"


@pytest.mark.parametrize(
    "family",
    [f if f == "mixtral" else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_drop_of_every_family_saves_a_stock_checkpoint(family: str, tmp_path: Path) -> None:
    import transformers
    from transformers import AutoConfig

    folder = _save(tmp_path, family)
    assert _compress(tmp_path, folder, "drop_to=6", "drop_criterion='frequency'") == 0
    out = _result(tmp_path)
    config = AutoConfig.from_pretrained(out)
    assert "moe_compression" not in config.to_dict() and (out / "moe_plan.json").is_file()
    cls = getattr(transformers, FAMILIES[family])
    stock, info = cls.from_pretrained(
        out, output_loading_info=True
    )  # stock loader, no qhybrid code
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert {layer.num_experts for layer in find_moe_layers(stock)} == {6}
    assert load_moe_checkpoint(out)(**tiny_batch(stock)).logits.isfinite().all()


@pytest.mark.parametrize("family", ["mixtral", pytest.param("qwen3_moe", marks=pytest.mark.slow)])
def test_prune_is_stock_and_merge_plus_packed_bits_needs_load_compressed(
    family: str, tmp_path: Path
) -> None:
    import transformers

    from moe.checkpoint import load_compressed
    from moe.experts import PackedExperts

    folder = _save(tmp_path, family)
    assert _compress(tmp_path, folder, "keep_ratio=0.5") == 0
    stock = getattr(transformers, FAMILIES[family]).from_pretrained(_result(tmp_path))
    assert {layer.intermediate_size for layer in find_moe_layers(stock)} == {32}
    assert _compress(tmp_path, folder, "merge_to=4", "avg_bits=3.0", "distill_steps=2") == 0
    again = load_compressed(_result(tmp_path))
    layers = find_moe_layers(again)
    assert all(
        isinstance(layer.experts, PackedExperts) and layer.num_experts == 4 for layer in layers
    )


def test_builtin_corpus_and_bytes_without_a_tokenizer() -> None:
    model = tiny_moe("mixtral", vocab=256)
    texts = calibration_texts("builtin", max_chars=20_000)
    assert any("def " in t for t in texts)
    batches, how = text_batches(model, texts, sequences=4, seq_len=16, tokenizer="bytes")
    assert "bytes" in how and batches[0]["input_ids"].shape == (4, 16)
    joined = "\n\n".join(texts).encode("utf-8")
    assert batches[0]["input_ids"][0].tolist() == list(joined[:16])


def test_a_dense_llama_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    assert _compress(tmp_path, tmp_path / "llama") == 2
    err = capsys.readouterr().err
    assert "model_type 'llama'" in err and "not a supported sparse-MoE family" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_mismatched_folders_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixtral = _save(tmp_path, "mixtral")
    qwen = _save(tmp_path, "qwen3_moe")
    # a Qwen3-MoE config over Mixtral weights: keys do not match
    (mixtral / "config.json").write_text((qwen / "config.json").read_text())
    with pytest.raises(MoEError, match="do not fit its config"):
        load_moe_checkpoint(mixtral)
    # a config whose architecture belongs to another family
    d = json.loads((qwen / "config.json").read_text())
    d["architectures"] = ["MixtralForCausalLM"]
    (qwen / "config.json").write_text(json.dumps(d))
    with pytest.raises(MoEError, match="does not belong"):
        load_moe_checkpoint(qwen)
    # same family, other shapes
    other = _save(tmp_path, "olmoe", num_experts=6)
    big = _save(tmp_path / "b", "olmoe")
    (big / "config.json").write_text((other / "config.json").read_text())
    assert _compress(tmp_path, big) == 2
    assert "do not fit its config" in capsys.readouterr().err
    (other / "model.safetensors").unlink()
    with pytest.raises(MoEError, match="no weights"):
        load_moe_checkpoint(other)
    bad = tmp_path / "calib.jsonl"
    bad.write_text('{"txt": "x"}\n')
    with pytest.raises(MoEError, match="no string field 'text'"):
        calibration_texts(str(bad))


def test_bf16_checkpoint_loads_as_float32_for_the_passes(tmp_path: Path) -> None:
    model = tiny_moe("mixtral", vocab=256).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = load_moe_checkpoint(tmp_path / "bf16")
    assert next(loaded.parameters()).dtype == torch.float32
    from moe.checkpoint import checkpoint_dtype

    assert checkpoint_dtype(tmp_path / "bf16") == torch.bfloat16


@pytest.mark.parametrize("sets", [("drop_to=6",), ("merge_to=4", "avg_bits=3.0")])
def test_compress_keeps_a_bf16_checkpoint_bf16_and_reports_bytes_per_part(
    sets: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from moe.checkpoint import bytes_by_part, load_compressed

    folder = tmp_path / "bf16"
    tiny_moe("mixtral", vocab=256).to(torch.bfloat16).save_pretrained(folder)
    assert _compress(tmp_path, folder, *sets) == 0
    out = capsys.readouterr().out
    assert "torch.bfloat16" in out and "attention" in out
    before, after = bytes_by_part(folder), bytes_by_part(_result(tmp_path))
    kept = ("attention", "embeddings and head", "norms") + (
        ("routers",) if "merge_to=4" in sets else ()
    )
    for part in kept:
        assert after[part] == before[part] > 0, part  # bf16 in, bf16 out: nothing doubles
    again = load_compressed(_result(tmp_path))
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    report = next((tmp_path / "runs").glob("moe-compress-*/report.md")).read_text()
    assert "Bytes on disk per part" in report
