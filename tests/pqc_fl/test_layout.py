"""The package's shape: the update's flow in its files, no import circle, every public name
documented, every function on one screen (issue 24)."""

from __future__ import annotations

from tests.layout import import_graph, long_functions, reaches, undocumented

GRAPH = import_graph("pqc_fl")


def test_no_module_imports_itself_back() -> None:
    assert [m for m in GRAPH if reaches(GRAPH, m, m)] == []


def test_the_update_flows_client_sign_wire_verify_aggregate() -> None:
    # what is signed depends on nothing else in the package; signing and verifying are apart
    assert GRAPH["envelope"] == set()
    assert "verify" not in GRAPH["sign"] and "sign" not in GRAPH["verify"]
    assert {"envelope", "wire"} <= GRAPH["sign"] and {
        "envelope",
        "wire",
        "policy",
        "keys",
    } <= GRAPH["verify"]
    assert "verify" in GRAPH["server"] and "server" in GRAPH["strategy"]
    assert not reaches(GRAPH, "policy", "verify")  # the old circle: policy -> envelope -> policy


def test_every_public_function_method_and_class_has_a_docstring() -> None:
    assert undocumented("pqc_fl") == []


def test_every_function_fits_on_one_screen() -> None:
    assert long_functions("pqc_fl") == []
