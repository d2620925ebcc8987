"""Run folders with provenance, and atomic file writes.

A run folder is ``runs/<name>-<time>/`` holding:

- ``config.json``: the resolved config, verbatim;
- ``env.json``: versions (python, torch, qiskit, qiskit-aer, transformers, flwr, cryptography), the git
  revision, the seed, the CPU and GPU;
- ``metrics.jsonl``: one JSON record per line, appended as the run goes;
- artefacts (checkpoints, datasets, tables) and ``report.md`` with its PNG figures.

Every file is written atomically: to a temporary file in the same folder, flushed and fsynced, then
renamed over the target (``os.replace`` is atomic on POSIX), so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qhybrid.config import config_to_dict
from qhybrid.errors import QHybridError

logger = logging.getLogger(__name__)

__all__ = [
    "Run",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_root",
    "create_run",
    "environment_info",
    "fresh_run",
    "git_state",
    "read_metrics",
    "write_results",
]

TRACKED_PACKAGES = (
    "numpy", "scipy", "torch", "qiskit", "qiskit-aer", "transformers", "flwr", "cryptography",
    "pqcrypto", "py-fn-dsa", "peft", "datasets", "scikit-learn",
)  # fmt: skip


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, permissions: int | None = None, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit rename it over ``path``.

    On an exception the temporary file is removed and ``path`` keeps its old content.

    Args:
        path: the target file.
        mode: ``"w"`` (text) or ``"wb"``.
        permissions: the file's mode bits. Default: what ``open()`` would give (0o666 less the
            umask). The temporary file is created owner-only and gets these bits before the rename,
            so a secret written with ``permissions=0o600`` is never readable by others.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    if path.exists() and not path.is_file():  # a rename would replace the device or FIFO itself
        raise QHybridError(
            f"'{path}' is a folder, device or FIFO, not a regular file; write to a new path or "
            "to a regular file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask() if permissions is None else permissions)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, permissions: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open` for ``permissions``)."""
    with atomic_open(path, "wb", permissions=permissions) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, permissions: int | None = None) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_open` for ``permissions``)."""
    with atomic_open(path, "w", permissions=permissions, encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "dirty_files"}`` of the repository holding ``cwd`` (default: qhybrid).

    ``dirty`` is true when a tracked file differs from the commit; ``dirty_files`` lists those
    files, so ``benchmarks/check_fresh.py`` can call a number stale exactly when one of them is
    code the number depends on (a document edited during a run does not untrace it).
    """
    here = Path(cwd) if cwd is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        files = sorted(git("diff", "--name-only", "--no-renames", "HEAD").splitlines())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "dirty_files": None}
    return {"commit": commit, "dirty": bool(files), "dirty_files": files}


def _revision(state: dict[str, Any]) -> str | None:
    """``sha`` or ``sha-dirty`` (the legacy ``git_revision`` of ``environment_info``)."""
    if state["commit"] is None:
        return None
    return str(state["commit"]) + ("-dirty" if state["dirty"] else "")


def write_results(
    path: str | Path, result: Mapping[str, Any], *, depends: tuple[str, ...], command: str = ""
) -> dict[str, Any]:
    """Write a benchmark's ``result`` as JSON with its provenance; return what was written.

    ``provenance`` records the git commit and whether the tree was dirty, the paths of the code the
    numbers depend on (``depends``: packages or files, relative to the repository root; a change to
    any of them after ``commit`` makes the result stale), the command line, and the machine and
    library versions of :func:`environment_info`.
    """
    import sys

    env = environment_info()
    provenance = {
        **git_state(),
        "depends": list(depends),
        "command": command or " ".join(["python", *sys.argv]),
        "created": env["created"],
        "cpu": env["cpu"],
        "cpu_count": env["cpu_count"],
        "gpu": env["gpu"],
        "versions": env["versions"],
    }
    out = {**result, "provenance": provenance}
    atomic_write_json(path, out)
    return out


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment_info(seed: int | None = None) -> dict[str, Any]:
    """Provenance of a run: package versions, git revision, seed, CPU and GPU."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in TRACKED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    gpu: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    git = git_state()
    return {
        "versions": versions,
        "git_revision": _revision(git),
        "dirty_files": git["dirty_files"],
        "seed": seed,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass
class Run:
    """An open run folder. Create one with :func:`create_run`."""

    path: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON record to ``metrics.jsonl`` (a single write of one whole line)."""
        line = json.dumps(dict(record), sort_keys=True, default=_json_default) + "\n"
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(line)

    def artefact(self, *parts: str) -> Path:
        """A path inside the run folder; parent folders are created."""
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` atomically, close it, and return the path.

        A figure without a layout engine gets matplotlib's constrained layout, so the labels of
        neighbouring panels never overprint each other.
        """
        import matplotlib.pyplot as plt

        if fig.get_layout_engine() is None:
            fig.set_layout_engine("constrained")
        target = self.artefact(name if name.endswith(".png") else f"{name}.png")
        with atomic_open(target, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return target


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def check_root(root: str | Path) -> Path:
    """``root`` as the folder that holds run folders: a new path or a folder, never a file, a device
    or a FIFO; a command checks it before its work starts (:func:`create_run` checks it again)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise QHybridError(f"--out '{root}' is a file; pass a folder for run folders")
    return root


def create_run(
    name: str, config: Any = None, *, root: str | Path = "runs", seed: int | None = None
) -> Run:
    """Create ``<root>/<name>-<UTC time>/`` with ``config.json`` and ``env.json``.

    Under ``torchrun`` only rank 0 creates the folder; the other ranks get a scratch folder in the
    system's temporary directory, so there is one run folder and one report per run.

    Args:
        name: a short name for the experiment (letters, digits, ``-`` and ``_``).
        config: the resolved config dataclass (or a plain mapping); saved verbatim.
        root: the folder that holds run folders.
        seed: the run's master seed, recorded in ``env.json``.
    """
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 writes into root
        path = Path(tempfile.mkdtemp(prefix=f"qhybrid-{name}-rank{os.environ['RANK']}-"))
        logger.info("rank %s: scratch run folder %s", os.environ["RANK"], path)
        return Run(path)
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise QHybridError(
            f"run name {name!r} must be non-empty and use only letters, digits, '-', '_'"
        )
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    root = check_root(root)
    path = root / f"{name}-{stamp}"
    i = 1
    while path.exists():  # two runs in the same second get distinct folders
        i += 1
        path = root / f"{name}-{stamp}-{i}"
    try:
        path.mkdir(parents=True)
    except OSError as err:
        raise QHybridError(
            f"cannot create a run folder in '{root}': {err.strerror}; pass --out a writable folder"
        ) from err
    if config is not None:
        cfg = config if isinstance(config, Mapping) else config_to_dict(config)
        atomic_write_json(path / "config.json", cfg)
    atomic_write_json(path / "env.json", environment_info(seed))
    logger.info("run folder %s", path)
    return Run(path)


@contextlib.contextmanager
def fresh_run(
    name: str, config: Any = None, *, root: str | Path = "runs", seed: int | None = None
) -> Iterator[Run]:
    """:func:`create_run` for a command whose config passed its checks; the folder is removed
    again if the command fails (or is interrupted) inside the ``with`` block, so a command that
    fails before its first result leaves nothing behind.

    Example:
        >>> with fresh_run("demo", root=tmp) as run:  # doctest: +SKIP
        ...     results = experiment()  # an exception here removes run.path
        ...     atomic_write_json(run.artefact("results.json"), results)
    """
    import shutil

    run = create_run(name, config, root=root, seed=seed)
    try:
        yield run
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (a run folder or the file itself) into a list of records."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
