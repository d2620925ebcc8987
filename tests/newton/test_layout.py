"""newton's files (issue 24): no import circle, the model modules depend on nothing heavier, every
public name documented, every function on one screen, no submodule shadowing a public name."""

from __future__ import annotations

from tests.layout import import_graph, long_functions, reaches, shadowed, undocumented

GRAPH = import_graph("newton")


def test_no_module_imports_itself_back() -> None:
    assert [m for m in GRAPH if reaches(GRAPH, m, m)] == []


def test_the_flow_is_in_the_files() -> None:
    # values and errors are the base; HHL is a backend below the solvers' dispatch and the
    # scheduler, sharing the system checks with them
    assert GRAPH["errors"] == set() and GRAPH["values"] == {"errors"}
    assert GRAPH["hhl"] == {"errors", "systems"} and "systems" in GRAPH["solvers"]
    # the optimizer builds on curvature, damping and the scheduler; nothing below imports it
    assert {"curvature", "damping", "scheduler"} <= GRAPH["optimizer"]
    assert not any(reaches(GRAPH, m, "optimizer") for m in ("scheduler", "solvers", "hhl", "cost"))
    # commands and the stage only configure and report: the experiments module does the work
    assert "experiments" in GRAPH["stage"] and "optimizer" not in GRAPH["stage"]


def test_every_public_name_is_documented_and_every_function_fits_on_a_screen() -> None:
    assert undocumented("newton") == []
    assert long_functions("newton") == []


def test_no_submodule_shadows_a_public_name() -> None:
    assert shadowed("newton") == []
