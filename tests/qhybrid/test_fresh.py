"""benchmarks/check_fresh.py: rows of the benchmark doc and the freshness of their results files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from qhybrid.runs import git_state, write_results

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh():
    spec = importlib.util.spec_from_file_location("check_fresh", ROOT / "benchmarks/check_fresh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_fresh"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


DOC = """# Benchmarks
## quantum/ (details)
| claim | command | result | target | met |
|---|---|---|---|---|
| speed | `python benchmarks/bench_quantum_sim.py` | 5x | 2x | yes |
| memory | same | 1 GB | 2 GB | yes |
| gpu | `python benchmarks/bench_quantum_sim.py --out x` (`quantum_sim_gpu.json`) | 1 s | – | – |
| demo | `make demo` | 3 min | – | – |
"""


def test_rows_name_their_results(fresh) -> None:
    rows = fresh.rows(DOC)
    assert [r.claim for r in rows] == ["speed", "memory", "gpu", "demo"]
    assert rows[0].jsons == ["quantum_sim.json"]
    assert rows[1].jsons == ["quantum_sim.json"]  # "same" repeats the row above
    assert rows[2].jsons == ["quantum_sim_gpu.json"]  # an explicit file wins over the script
    assert rows[3].jsons == []


def test_status_follows_the_commit_and_the_dependencies(fresh, tmp_path, monkeypatch) -> None:
    head = git_state()["commit"]
    if head is None:
        pytest.skip("not a git checkout")
    monkeypatch.setattr(fresh, "RESULTS", tmp_path)
    write_results(tmp_path / "a.json", {"x": 1}, depends=("quantum",))
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["provenance"]["commit"] == head and data["x"] == 1
    assert isinstance(data["provenance"]["dirty_files"], list)

    def status_with(**provenance):
        data["provenance"].update(provenance)
        (tmp_path / "a.json").write_text(json.dumps(data))
        return fresh.check_json("a.json")

    assert status_with(dirty=False, dirty_files=[]) == ("fresh", [])
    # uncommitted edits count only where the result depends on them
    assert status_with(dirty=True, dirty_files=["docs/quantum.md"]) == ("fresh", [])
    status, why = status_with(dirty=True, dirty_files=["docs/quantum.md", "quantum/render.py"])
    assert status == "stale" and "dirty" in why[0]
    assert status_with(dirty=True, dirty_files=["quantum_extra/x.py"])[0] == "fresh"
    del data["provenance"]["dirty_files"]  # an older file: any dirt counts
    status, why = status_with(dirty=True)
    assert status == "stale" and "dirty" in why[0]
    first = fresh._git("rev-list", "--max-parents=0", "HEAD").stdout.split()[0]
    data["provenance"].update(commit=first, dirty=False)  # the first commit: quantum/ changed since
    (tmp_path / "a.json").write_text(json.dumps(data))
    status, why = fresh.check_json("a.json")
    assert status == "stale" and "quantum/" in why[0]
    (tmp_path / "b.json").write_text(json.dumps({"x": 1}))
    assert fresh.check_json("b.json")[0] == "untracked"
    assert fresh.check_json("missing.json")[0] == "untracked"
    data["provenance"]["commit"] = "0" * 40
    (tmp_path / "a.json").write_text(json.dumps(data))
    assert fresh.check_json("a.json")[0] == "stale"


def test_legacy_environment_blocks_record_their_dirty_files(fresh, tmp_path, monkeypatch) -> None:
    from qhybrid.runs import environment_info

    head = git_state()["commit"]
    if head is None:
        pytest.skip("not a git checkout")
    monkeypatch.setattr(fresh, "RESULTS", tmp_path)
    assert isinstance(environment_info()["dirty_files"], list)
    path = tmp_path / "quantum_x.json"  # DEFAULT_DEPENDS: quantum/
    for files, status in ((["docs/quantum.md"], "fresh"), (["quantum/render.py"], "stale")):
        env = {"git_revision": f"{head}-dirty", "dirty_files": files}
        path.write_text(json.dumps({"env": env}))
        assert fresh.check_json(path.name)[0] == status
    path.write_text(json.dumps({"env": {"git_revision": f"{head}-dirty"}}))  # files not recorded
    assert fresh.check_json(path.name)[0] == "stale"
