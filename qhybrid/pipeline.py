"""``qhybrid reproduce``: every part end to end into one run folder and one report.

Each part contributes a *stage*: a module with a frozen ``StageConfig`` dataclass (whose defaults are
the quick preset: minutes on two CPU cores), a ``TITLE`` and a function

    run_stage(run: Run, config: StageConfig, *, seed: int, context: dict) -> Section

``context`` carries what earlier stages hand to later ones (``context["llm"]`` for the ``moe``
stage, say). The pipeline resolves every stage's config before running anything, so a typo in
``--set newton.epochs=x`` fails at once; it then runs the stages in order, records a failing stage in
the report (with its error) and goes on with the others, and reports failure through its return value.

A reproduce config is a TOML file with the top-level keys below and one table per stage:

    name = "reproduce"
    seed = 0
    stages = ["core", "quantum"]
    [quantum]
    max_qubits = 6
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qhybrid.config import config_to_dict, from_dict, load_toml, parse_overrides, presets
from qhybrid.errors import ConfigError
from qhybrid.report import Section, write_report
from qhybrid.runs import Run, create_run

logger = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "ReproduceConfig",
    "ReproduceResult",
    "reproduce",
    "reproduce_presets",
    "resolve_reproduce",
]

# Stage name -> the module that provides StageConfig, TITLE and run_stage, in pipeline order.
STAGES: dict[str, str] = {
    "core": "qhybrid.stage",
    "quantum": "quantum.stage",
    "llm": "llm_sim.stage",
    "newton": "newton.stage",
    "fl": "pqc_fl.stage",
    "moe": "moe.stage",
}


def reproduce_presets() -> dict[str, str]:
    """``{name: description}`` of the reproduce presets (``qhybrid/presets/reproduce_<name>.toml``)."""
    return {
        name.removeprefix("reproduce_"): text
        for name, text in presets().items()
        if name.startswith("reproduce_")
    }


@dataclass(frozen=True)
class ReproduceConfig:
    """The top level of a reproduce run; each stage's own config sits in ``stage_configs``."""

    name: str = "reproduce"  # run-folder prefix
    seed: int = 0  # master seed; each stage gets it unchanged
    stages: tuple[str, ...] = tuple(STAGES)  # stages to run, in pipeline order
    stage_configs: dict[str, Any] = field(default_factory=dict)  # name -> resolved StageConfig

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}; valid stages: {list(STAGES)}")


@dataclass
class ReproduceResult:
    run: Run
    sections: list[Section]
    report: Path

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.sections)


def _stage_module(name: str) -> Any | None:
    """The stage's module, or None when that part is not in this installation yet."""
    module = STAGES[name]
    if (
        importlib.util.find_spec(module.split(".")[0]) is None
        or importlib.util.find_spec(module) is None
    ):
        return None
    return importlib.import_module(module)


def resolve_reproduce(
    preset: str = "quick", path: str | Path | None = None, overrides: Sequence[str] = ()
) -> ReproduceConfig:
    """Resolve the preset, an optional TOML file and ``--set`` overrides into a ReproduceConfig."""
    if preset not in reproduce_presets():
        raise ConfigError(
            f"unknown preset {preset!r}; valid presets: {sorted(reproduce_presets())}"
        )
    data: dict[str, Any] = {}
    sources = (load_toml(f"reproduce_{preset}"), load_toml(path) if path else {})
    for source in (*sources, parse_overrides(overrides)):
        for key, value in source.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
    top = {k: v for k, v in data.items() if k not in STAGES}
    tables = {k: v for k, v in data.items() if k in STAGES}
    unknown = sorted(set(top) - {"name", "seed", "stages"})
    if unknown:
        raise ConfigError(
            f"unknown reproduce key(s) {unknown}; valid keys: name, seed, stages, and one table per "
            f"stage ({', '.join(STAGES)}), e.g. --set core.steps=100"
        )
    base = from_dict(ReproduceConfig, top)
    configs: dict[str, Any] = {}
    for name in base.stages:
        module = _stage_module(name)
        if module is None:
            if name in tables:
                raise ConfigError(
                    f"options given for stage {name!r}, but that part is not installed"
                )
            continue
        configs[name] = from_dict(module.StageConfig, tables.get(name, {}), prefix=f"{name}.")
    return ReproduceConfig(
        name=base.name, seed=base.seed, stages=base.stages, stage_configs=configs
    )


HEARTBEAT_SECONDS = 15.0  # longest silence of `qhybrid reproduce` while a stage runs


class _Heartbeat:
    """Print ``<stage>: running, <s> s`` every ``every`` seconds while a stage runs (a daemon thread)."""

    def __init__(self, name: str, echo: Callable[[str], None], every: float) -> None:
        self.name, self.echo, self.every = name, echo, every
        self.t0 = time.perf_counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stopped.wait(self.every):
            self.echo(f"  {self.name}: running, {time.perf_counter() - self.t0:.0f} s")

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def quiet_library_progress() -> None:
    """Turn off the progress bars of transformers and datasets (they say nothing here; the
    command has also set ``HF_HUB_DISABLE_PROGRESS_BARS``)."""
    if not sys.stderr.isatty():  # our own loops print plain lines there instead
        os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if importlib.util.find_spec("datasets") is not None:
        import datasets

        datasets.disable_progress_bars()


def _headline(section: Section) -> str:
    """The stage's own headline, else the first row of its first table."""
    if section.headline or not section.tables:
        return section.headline
    row = section.tables[0][1][0] if section.tables[0][1] else {}
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(row.items())[:4]
    )


def _run_stage(
    module: Any, name: str, config: ReproduceConfig, run: Run, context: dict[str, Any]
) -> Section:
    """One stage; a failure becomes a failed section (with the traceback in ``<name>-error.txt``)."""
    t0 = time.perf_counter()
    try:
        section: Section = module.run_stage(
            run, config.stage_configs[name], seed=config.seed, context=context
        )
    except Exception as err:  # a failing stage is reported; the other stages still run
        logger.error("stage %s failed: %s", name, err)
        (run.path / f"{name}-error.txt").write_text(traceback.format_exc())
        section = Section(
            getattr(module, "TITLE", name), status="failed", error=f"{type(err).__name__}: {err}"
        )
    section.seconds = time.perf_counter() - t0
    return section


def reproduce(
    config: ReproduceConfig,
    *,
    root: str | Path = "runs",
    echo: Callable[[str], None] | None = None,
) -> ReproduceResult:
    """Run the configured stages in order into one run folder with one ``report.md``.

    ``echo`` (``print`` for the command) gets a line when each stage starts and ends, with its time
    and key result, and one every 15 s while a stage runs. After Ctrl-C the report marks the
    running stage as interrupted and the ``KeyboardInterrupt`` goes on to the caller.
    """
    say = echo or (lambda line: None)
    snapshot = {
        "name": config.name,
        "seed": config.seed,
        "stages": list(config.stages),
        **{k: config_to_dict(v) for k, v in config.stage_configs.items()},
    }
    run = create_run(config.name, snapshot, root=root, seed=config.seed)
    if echo is not None:
        quiet_library_progress()
    say(f"run folder: {run.path}")
    sections: list[Section] = []
    context: dict[str, Any] = {}
    preamble = _preamble(config, run)
    for i, name in enumerate(config.stages, 1):
        module = _stage_module(name)
        if module is None:
            sections.append(
                Section(name, status="skipped", error=f"part '{STAGES[name]}' not installed")
            )
            say(f"[{i}/{len(config.stages)}] {name}: skipped (not installed)")
            continue
        say(f"[{i}/{len(config.stages)}] {name}: {getattr(module, 'TITLE', name)}")
        try:
            with (
                _Heartbeat(name, say, HEARTBEAT_SECONDS)
                if echo is not None
                else contextlib.nullcontext()
            ):
                section = _run_stage(module, name, config, run, context)
        except KeyboardInterrupt:
            sections.append(Section(getattr(module, "TITLE", name), status="interrupted"))
            write_report(run, "qhybrid reproduce (interrupted)", sections, preamble=preamble)
            say(f"[{i}/{len(config.stages)}] {name}: interrupted; partial report in {run.path}")
            raise
        sections.append(section)
        detail = section.error if section.status == "failed" else _headline(section)
        say(
            f"[{i}/{len(config.stages)}] {name}: {section.status} in {section.seconds:.0f} s; {detail}"
        )
        # Rewrite the report after every stage, so an interrupted run keeps what finished.
        write_report(run, "qhybrid reproduce", sections, preamble=preamble)
        run.log_metrics({"stage": name, "status": section.status, "seconds": section.seconds})
    report = write_report(run, "qhybrid reproduce", sections, preamble=preamble)
    return ReproduceResult(run=run, sections=sections, report=report)


def _preamble(config: ReproduceConfig, run: Run) -> str:
    return (
        f"Run folder `{run.path}`; seed {config.seed}; stages {', '.join(config.stages)}. "
        "Versions, git revision and hardware are in `env.json`, the resolved config in `config.json`."
    )
