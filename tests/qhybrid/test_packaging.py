"""The wheel: built without make, it carries the presets and the type marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_every_preset(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("qhybrid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted((ROOT / "qhybrid" / "presets").glob("*.toml"))
    assert presets
    for p in presets:
        assert f"qhybrid/presets/{p.name}" in names
    assert "qhybrid/py.typed" in names
    assert "pqc_fl/flower_pyproject.toml" in names  # the Flower app's project file
    for part in ("quantum", "llm_sim", "newton", "pqc_fl", "moe"):
        assert f"{part}/__init__.py" in names
