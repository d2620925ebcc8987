"""Outputs are renamed only onto regular files or new paths; a fresh run folder goes away when its
command fails; a function's annotations check its arguments as a config's do (issue 21)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import pytest
from annotated_types import Ge

from qhybrid.config import check_arguments
from qhybrid.errors import ConfigError, QHybridError
from qhybrid.runs import atomic_write_text, fresh_run


def test_atomic_writes_refuse_folders_devices_and_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    link = tmp_path / "link"
    link.symlink_to("/dev/null")
    for target in (fifo, folder, link, Path("/dev/null")):
        with pytest.raises(QHybridError, match="not a regular file"):
            atomic_write_text(target, "x")
    assert fifo.exists() and folder.is_dir() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link"]
    atomic_write_text(tmp_path / "new.txt", "a")
    atomic_write_text(tmp_path / "new.txt", "b")  # a regular file is replaced
    assert (tmp_path / "new.txt").read_text() == "b"


@pytest.mark.parametrize("failure", [ValueError("boom"), KeyboardInterrupt()])
def test_fresh_run_is_removed_when_the_command_fails(
    tmp_path: Path, failure: BaseException
) -> None:
    made = []
    with pytest.raises(type(failure)), fresh_run("demo", root=tmp_path, seed=0) as run:
        made.append(run.path)
        (run.path / "partial.json").write_text("{}")
        raise failure
    assert made and not made[0].exists() and list(tmp_path.iterdir()) == []
    with fresh_run("demo", root=tmp_path) as run:
        pass
    assert (run.path / "env.json").is_file()  # a command that succeeds keeps its folder


def _documented(
    n: Annotated[int, Ge(1)], mode: Literal["a", "b"] = "a", items: tuple[float, ...] = ()
) -> None:
    """A function whose annotations declare its arguments."""


def test_check_arguments_applies_the_annotations() -> None:
    assert check_arguments(_documented, {"n": 2, "mode": "b", "items": [1, 2.5]}) == {
        "n": 2,
        "mode": "b",
        "items": (1.0, 2.5),
    }
    for values, match in (
        ({"n": 0}, "'n' = 0 must be >= 1"),
        ({"n": True}, "'n' must be an int"),
        ({"mode": "c"}, "'mode' = 'c' is not one of"),
        ({"items": [float("nan")]}, r"'items\[0\]' is NaN"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_arguments(_documented, values)
    assert check_arguments(_documented, {"n": 0}, skip=("n",)) == {"n": 0}
