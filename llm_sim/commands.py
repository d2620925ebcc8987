"""``qhybrid llm train|eval|finetune``. Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse

from qhybrid.config import add_config_arguments


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="llm_command", metavar="COMMAND")
    p = sub.add_parser("train", help="train small dense / MoE models from scratch (one per seed)")
    add_config_arguments(p)
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a training run's models beside the baselines")
    add_config_arguments(p)
    p.set_defaults(func=_eval)
    p = sub.add_parser("finetune", help="fine-tune a local pretrained causal LM (full or LoRA)")
    add_config_arguments(p)
    p.set_defaults(func=_finetune)


def _train(args: argparse.Namespace) -> int:
    from llm_sim.training import LLMTrainConfig, train_run
    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run

    config = config_from_args(LLMTrainConfig, args)
    run = create_run(config.name, config, root=args.out, seed=config.seeds[0])
    trained = train_run(config, run.path)
    for t in trained:
        run.log_metrics({"seed_model": str(t.path), "n_params": t.n_params, "final_loss": t.result.loss,
                         "train_seconds": t.result.wall_time_s})  # fmt: skip
        print(f"model: {t.path} ({t.n_params:,} parameters, loss {t.result.loss:.4g}, "
              f"{t.result.wall_time_s:.0f} s)")  # fmt: skip
    print(f"run: {run.path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from llm_sim.evaluate import EvalConfig, evaluate_run
    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run

    config = config_from_args(EvalConfig, args)
    run = create_run(config.name, config, root=args.out)
    results = evaluate_run(config, run.path, progress=print)
    print(
        (run.path / "eval.md").read_text().split("\n## ")[1] if results["tables"] else "no results"
    )
    print(f"tables: {run.path / 'eval.md'}  plot: {results['figure']}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from llm_sim.finetune import FinetuneConfig, finetune
    from qhybrid.config import config_from_args
    from qhybrid.runs import create_run

    config = config_from_args(FinetuneConfig, args)
    run = create_run(config.name, config, root=args.out, seed=config.seed)
    out = finetune(config, run.path)
    print(f"model: {out.path}")
    return 0
