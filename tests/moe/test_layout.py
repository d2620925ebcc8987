"""moe's files show its flow (issue 24): load (checkpoint) -> calibration -> statistics -> passes
(recorded in the plan) -> save/load (checkpoint); no import circle, every public name documented,
every function on one screen, no submodule shadowing a public name."""

from __future__ import annotations

from tests.layout import import_graph, long_functions, reaches, shadowed, undocumented

GRAPH = import_graph("moe")
PASSES = ("merge", "drop", "compress", "quantize")


def test_no_module_imports_itself_back() -> None:
    assert [m for m in GRAPH if reaches(GRAPH, m, m)] == []


def test_load_statistics_pass_save_in_the_files() -> None:
    # every load and save is in checkpoint; the plan only records what the passes did
    assert GRAPH["plan"] <= {"layers", "modeling"}
    assert "checkpoint" not in {m for p in PASSES for m in GRAPH[p]}
    assert all({"stats", "plan", "values"} <= GRAPH[p] for p in PASSES)
    assert "plan" in GRAPH["checkpoint"] and "stats" not in GRAPH["checkpoint"]
    # calibration text comes in without knowing the passes or the files they write
    assert GRAPH["calibration"] == {"layers"}
    # the declarations are light: no module of the package below them
    assert GRAPH["values"] == {"modeling"}


def test_every_public_name_is_documented_and_every_function_fits_on_a_screen() -> None:
    assert undocumented("moe") == []
    assert long_functions("moe") == []


def test_no_submodule_shadows_a_public_name() -> None:
    assert shadowed("moe") == []
