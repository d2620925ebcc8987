"""``qhybrid llm train|eval|finetune|export-anchor``. Heavy imports happen inside the commands.

Every command checks its config and inputs before it creates its run folder, so a corrected
command is never refused because a failed one left something behind.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from qhybrid.config import add_config_arguments


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="llm_command", metavar="COMMAND")
    p = sub.add_parser("train", help="train small dense / MoE models from scratch (one per seed)")
    add_config_arguments(p, "llm_sim.training:LLMTrainConfig")
    p.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue the training run folder RUN with its saved config: finished seeds are "
        "kept, the others go on from their latest checkpoint",
    )
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a training run's models beside the baselines")
    add_config_arguments(p, "llm_sim.evaluate:EvalConfig")
    p.set_defaults(func=_eval)
    p = sub.add_parser("finetune", help="fine-tune a local pretrained causal LM (full or LoRA)")
    add_config_arguments(p, "llm_sim.finetune:FinetuneConfig")
    p.set_defaults(func=_finetune)
    p = sub.add_parser(
        "export-anchor", help="write problems as GroverGPT-2 records (instruction/input/output)"
    )
    add_config_arguments(p, "llm_sim.commands:ExportConfig")
    p.set_defaults(func=_export_anchor)


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from llm_sim.training import LLMTrainConfig, load_splits, train_run
    from qhybrid.config import config_from_args, from_dict
    from qhybrid.errors import ConfigError
    from qhybrid.runs import Run, create_run

    if args.resume:
        if args.config or args.overrides:
            raise ConfigError(
                "--resume continues a run with the config saved in it; drop --config/--set "
                "(or start a new run without --resume)"
            )
        path = Path(args.resume)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"--resume {args.resume!r} is not a 'qhybrid llm train' run folder (no config.json)"
            )
        config = from_dict(LLMTrainConfig, json.loads((path / "config.json").read_text()))
        run, splits = Run(path), None
    else:
        config = config_from_args(LLMTrainConfig, args)
        splits = load_splits(config)  # a bad dataset folder fails here, before the run folder
        run = create_run(config.name, config, root=args.out, seed=config.seeds[0])
    print(f"run: {run.path}", flush=True)
    trained = train_run(config, run.path, splits=splits, resume=bool(args.resume))
    for t in trained:
        if t.result is None:
            print(f"model: {t.path} (finished before the resume)")
            continue
        run.log_metrics(
            {
                "seed_model": str(t.path),
                "n_params": t.n_params,
                "final_loss": t.result.loss,
                "train_seconds": t.result.wall_time_s,
            }
        )
        print(
            f"model: {t.path} ({t.n_params:,} parameters, loss {t.result.loss:.4g}, "
            f"{t.result.wall_time_s:.0f} s)"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from llm_sim.evaluate import EvalConfig, eval_inputs, evaluate_run
    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run

    config = config_from_args(EvalConfig, args)
    inputs = eval_inputs(config)  # a bad run folder or anchor file fails before the eval folder
    run = create_run(config.name, config, root=args.out)
    results = evaluate_run(config, run.path, inputs=inputs, progress=print)
    print((run.path / "eval.md").read_text().split("\n## ")[1])
    print(f"tables: {run.path / 'eval.md'}  plot: {results['figure']}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from llm_sim.finetune import FinetuneConfig, finetune, load_base
    from llm_sim.training import load_splits
    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run

    config = config_from_args(FinetuneConfig, args)
    load_base(config.base, check_only=True)
    splits = load_splits(config)
    run = create_run(config.name, config, root=args.out, seed=config.seed)
    out = finetune(config, run.path, splits=splits)
    print(f"model: {out.path}")
    return 0


@dataclass(frozen=True)
class ExportConfig:
    """``qhybrid llm export-anchor``: a split as GroverGPT-2 records."""

    name: str = "llm-export-anchor"  # run-folder prefix
    dataset: str = ""  # a 'qhybrid grover generate' folder; "" = the built-in llm splits
    split: str = "test_id"  # which split to export
    input: str = "full"  # "full" (the whole QASM3 circuit) or "oracle" (its Oracle gate only)
    path: str = "anchor.json"  # the JSON file to write


def _export_anchor(args: argparse.Namespace) -> int:
    from llm_sim.anchor import INPUTS, export_anchor
    from llm_sim.training import DATA, load_splits
    from qhybrid.config import config_from_args
    from qhybrid.errors import ConfigError

    config = config_from_args(ExportConfig, args)
    if config.input not in INPUTS:
        raise ConfigError(f"input={config.input!r}; use one of {INPUTS}")
    splits = load_splits(argparse.Namespace(dataset=config.dataset, data=DATA))
    if not splits.get(config.split):
        raise ConfigError(
            f"split={config.split!r} has no problems; choose one of "
            f"{sorted(k for k, v in splits.items() if v)}"
        )
    problems = [p for p in splits[config.split] if p.oracle_style == "x_mcz_x" and p.iterations]
    count = export_anchor(problems, config.path, config.input)
    print(
        f"wrote {count} of {len(splits[config.split])} {config.split} problems (the x_mcz_x ones "
        f"with k >= 1) as anchor records with {config.input} input to {config.path}"
    )
    return 0
