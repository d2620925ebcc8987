"""Fine-tune a pretrained causal LM from a local folder, full or LoRA (peft), on Grover problems.

The anchor setting (GroverGPT-2: LLaMA-3-8B, LoRA r=8, alpha=32 on q_proj/v_proj, QASM3 input) at
any scale: ``base`` is any folder ``AutoModelForCausalLM.from_pretrained`` reads (nothing is
downloaded). Training goes through :func:`qhybrid.train.train`; the result is saved merged (LoRA
folded into the weights) as ``model-seed<S>/`` beside ``splits.json``, so ``qhybrid llm eval`` reads it
like a from-scratch run, and the LoRA adapter alone is kept in ``adapter-seed<S>/``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_sim.data import Batches, TaskFormat, encode_example
from llm_sim.positions import PositionScheme
from llm_sim.training import lm_loss, load_splits, write_splits
from qhybrid.errors import QHybridError
from qhybrid.runs import atomic_write_json
from qhybrid.train import TrainConfig, TrainResult, seed_everything, train
from quantum.dataset import DatasetSpec, SplitSpec

# The anchor's setting at laptop scale: QASM3 prompts are long, so few and small problems.
FINETUNE_DATA = DatasetSpec(
    train=SplitSpec(3, 4, 1, 3, 400),
    test_id=SplitSpec(3, 4, 1, 3, 40),
    test_ood_n=SplitSpec(5, 6, 1, 3, 40),
    test_ood_t=SplitSpec(5, 5, 4, 6, 40),
    test_ood_k=SplitSpec(3, 4, 1, 3, 40, off_optimal=1.0),
)

logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_base"]


@dataclass(frozen=True)
class FinetuneConfig:
    """``qhybrid llm finetune``: adapt a local pretrained model."""

    name: str = "llm-finetune"  # run-folder prefix
    base: str = (
        ""  # local folder with a pretrained causal LM and its tokenizer (save_pretrained layout)
    )
    seed: int = 0  # init of LoRA weights and data order
    method: str = "lora"  # "lora" (peft) or "full"
    lora_r: int = 8  # LoRA rank (anchor: 8)
    lora_alpha: int = 32  # LoRA scaling numerator (anchor: 32)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names that get adapters (anchor)
    task: TaskFormat = field(
        default_factory=lambda: TaskFormat(
            fmt="qasm3", answer="dict", positions=PositionScheme("sequential")
        )
    )  # anchor I/O; a pretrained model knows sequential positions only
    dataset: str = ""  # a 'qhybrid grover generate' folder; "" = draw the data spec in memory
    data: DatasetSpec = FINETUNE_DATA  # the splits when dataset is ""
    steps: int = 200  # optimizer steps
    batch_size: int = 8  # sequences per step
    lr: float = 2e-4  # AdamW learning rate (LoRA; use ~2e-5 for full fine-tuning)
    device: str = "auto"  # "auto", "cpu" or "cuda"


@dataclass
class FinetuneResult:
    model: Any
    tokenizer: Any
    result: TrainResult
    path: Path  # merged save_pretrained folder
    trainable: int  # trainable parameters
    total: int  # all parameters


def load_base(path: str | Path, *, check_only: bool = False) -> tuple[Any, Any]:
    """Model and tokenizer from a local folder; a clear error when it is missing or not a causal LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not str(path) or not (p / "config.json").is_file():
        raise QHybridError(
            f"base={str(path)!r} is not a local model folder (no config.json); pass a folder written by "
            "save_pretrained; nothing is downloaded"
        )
    if check_only:
        return None, None
    tok = AutoTokenizer.from_pretrained(p)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # many pretrained LMs have no pad token
    model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    return model, tok


def finetune(
    config: FinetuneConfig,
    out_dir: Path,
    *,
    splits: dict[str, list[Any]] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``config.base`` on the train split (of ``config.dataset`` or ``config.data``)."""
    if config.method not in ("lora", "full"):
        raise QHybridError(f"method={config.method!r} must be 'lora' or 'full'")
    seed_everything(config.seed)
    model, tok = load_base(config.base)
    if config.method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:  # pragma: no cover - the llm extra installs it
            raise QHybridError("LoRA needs peft: pip install 'qhybrid[llm]'") from err
        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_targets),
                task_type="CAUSAL_LM",
            ),
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    splits = splits if splits is not None else load_splits(config)
    examples = [encode_example(p, tok, config.task) for p in splits["train"]]
    batches = Batches(
        examples, config.batch_size, tok.pad_token_id, config.task.positions, seed=config.seed
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = TrainConfig(
        max_steps=config.steps,
        lr_schedule="cosine",
        warmup_steps=max(1, config.steps // 10),
        seed=config.seed,
        device=config.device,
        progress=progress,
        log_every=max(1, min(20, config.steps // 5)),
    )
    result = train(
        model,
        batches,
        lm_loss,
        opt,
        tcfg,
        checkpoint_dir=out_dir / f"checkpoints-seed{config.seed}",
        metrics_path=out_dir / f"metrics-seed{config.seed}.jsonl",
    )
    if config.method == "lora":
        model.save_pretrained(out_dir / f"adapter-seed{config.seed}")
        model = model.merge_and_unload()
    path = out_dir / f"model-seed{config.seed}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    atomic_write_json(
        path / "task.json",
        {
            "task": asdict(config.task),
            "n_params": total,
            "trainable": trainable,
            "base": str(config.base),
            "seed": config.seed,
            "train_seconds": result.wall_time_s,
            "steps": result.step,
        },
    )
    write_splits(out_dir / "splits.json", splits)
    return FinetuneResult(model, tok, result, path, trainable, total)
