"""The ``qhybrid`` command: one subcommand per part, plus ``reproduce``.

Each part adds its own subcommands from ``<part>/commands.py``, a light module (heavy imports inside
functions) with ``register(parser)`` that adds sub-parsers whose ``func(args) -> int`` runs the work.
Only the part named on the command line is imported, so ``qhybrid --help`` is instant.

User errors (:class:`~qhybrid.errors.QHybridError`) print ``error: <message>`` without a traceback
and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
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
    result = reproduce(config, root=args.out)
    print(f"report: {result.report}")
    failed = [s.title for s in result.sections if s.status == "failed"]
    if failed:
        print(f"failed stages: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qhybrid", description="qhybrid: hybrid quantum-classical simulation toolkit"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    func = getattr(args, "func", None)
    if func is None:  # a part's parser with sub-commands but none chosen
        parser.parse_args([*argv, "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except QHybridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
