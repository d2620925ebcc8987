"""The ``qhybrid`` command: one subcommand per part, plus ``reproduce``.

Each part adds its own subcommands from ``<part>/commands.py``, a light module (heavy imports inside
functions) with ``register(parser)`` that adds sub-parsers whose ``func(args) -> int`` runs the work.
Only the part named on the command line is imported, so ``qhybrid --help`` is instant.

User errors (:class:`~qhybrid.errors.QHybridError`), file-system and decoding errors print one
``error: <message>`` line without a traceback and exit with status 2; Ctrl-C exits with 130
and SIGTERM with 143, both with the report marked interrupted (``-vv`` adds the traceback).
``-v`` works before or after the subcommand.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from qhybrid.config import add_config_arguments
from qhybrid.errors import QHybridError

# subcommand -> (module with register(parser), one-line help)
PARTS: dict[str, tuple[str, str]] = {
    "grover": ("quantum.commands", "Grover problems: simulate, render, generate datasets"),
    "llm": ("llm_sim.commands", "train and evaluate GroverGPT-style language models"),
    "newton": ("newton.commands", "Q-Newton training with a classical/HHL solve scheduler"),
    "fl": ("pqc_fl.commands", "federated learning on Flower with post-quantum signed updates"),
    "moe": ("moe.commands", "Mixture-of-Experts compression passes"),
}


def _not_available(part: str, module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise QHybridError(
            f"'qhybrid {part}' is not available in this version (no module {module})"
        )

    return run


def _reproduce(args: argparse.Namespace) -> int:
    from qhybrid.pipeline import reproduce, resolve_reproduce

    config = resolve_reproduce(args.preset, args.config, args.overrides)
    result = reproduce(config, root=args.out, echo=functools.partial(print, flush=True))
    print(f"report: {result.report}")
    failed = [s.title for s in result.sections if s.status == "failed"]
    if failed:
        print(f"failed stages: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _presets(args: argparse.Namespace) -> int:
    from qhybrid.config import presets

    for name, text in presets().items():
        print(f"{name:24s} {text}")
    return 0


def _reproduce_help() -> str:
    """Stages (with their config keys) and presets, for ``qhybrid reproduce --help``."""
    from qhybrid.config import config_help
    from qhybrid.pipeline import STAGES, _stage_module, reproduce_presets

    lines = ["presets (--preset NAME):"]
    lines += [f"  {name:10s} {text}" for name, text in reproduce_presets().items()]
    lines.append(
        '\nstages (--set \'stages=["core", "quantum"]\') and their keys (--set STAGE.KEY=VALUE):'
    )
    for name in STAGES:
        module = _stage_module(name)
        if module is None:
            lines.append(f"{name}: not installed")
            continue
        lines.append(f"{name}: {module.TITLE}")
        lines.append(config_help(module.StageConfig, f"{name}."))
    return "\n".join(lines) + "\n"


def _add_verbose(parser: argparse.ArgumentParser, top: bool) -> None:
    """``-v`` on ``parser`` and, recursively, on every subcommand (so it works after them too)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more log output (-vv: debug, and tracebacks on errors)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child, top=False)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qhybrid", description="qhybrid: hybrid quantum-classical simulation toolkit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for part, (module, help_text) in PARTS.items():
        p = sub.add_parser(part, help=help_text, description=help_text)
        if part != wanted:
            continue
        if importlib.util.find_spec(module.split(".")[0]) and importlib.util.find_spec(module):
            importlib.import_module(module).register(p)
        else:
            p.set_defaults(func=_not_available(part, module))
    rep = sub.add_parser(
        "reproduce",
        help="run every part end to end and write one report",
        description="Run every part end to end into one run folder with one report.md.",
    )
    rep.add_argument("--preset", default="quick", help="named preset (default: quick)")
    add_config_arguments(rep)
    rep.set_defaults(func=_reproduce)
    plain_help = rep.format_help
    rep.format_help = lambda: f"{plain_help()}\n{_reproduce_help()}"  # type: ignore[method-assign]
    pre = sub.add_parser("presets", help="list the config presets shipped with qhybrid")
    pre.set_defaults(func=_presets)
    _add_verbose(parser, top=True)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a kill, a job scheduler's stop) handled like Ctrl-C: reports are marked interrupted."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _error_line(err: BaseException) -> str:
    """One line for an error a user can act on (a file, a decoding or a memory problem)."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or err}: '{err.filename}'; check the path and its permissions"
    if isinstance(err, UnicodeError):
        return f"a file is not UTF-8 text ({err}); save it as UTF-8"
    if isinstance(err, MemoryError):
        return (
            "out of memory; use a smaller problem, the closed form, or a machine with more memory"
        )
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # libraries' own DEBUG loggers stay quiet too
        handler.setLevel(level)
    # Hub, transformers and datasets progress bars (shards written, files fetched) say nothing
    # here; our own loops print their progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    func = getattr(args, "func", None)
    if func is None:  # a part's parser with sub-commands but none chosen
        parser.parse_args([*argv, "--help"])
        return 2
    on_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        return int(func(args) or 0)
    except Terminated:
        print(f"error: terminated (qhybrid {wanted})", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"error: interrupted (qhybrid {wanted})", file=sys.stderr)
        return 130
    except (QHybridError, OSError, UnicodeError, MemoryError) as err:
        if args.verbose >= 2:
            traceback.print_exc()
        print(f"error: {_error_line(err)}", file=sys.stderr)
        return 2
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


if __name__ == "__main__":
    sys.exit(main())
