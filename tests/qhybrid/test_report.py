from __future__ import annotations

from qhybrid.report import Section, markdown_table, render_report
from qhybrid.runs import create_run


def test_markdown_table_formats_and_escapes():
    text = markdown_table([{"a": 1, "b": 0.123456}, {"a": "x|y", "c": None}])
    assert text.splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 1 | 0.1235 | – |",
        "| x\\|y | – | – |",
    ]


def test_report_lists_stages_with_status(tmp_path):
    run = create_run("r", root=tmp_path)
    ok = Section("Good", text="fine", seconds=1.5)
    ok.add_table("T", [{"k": 1}])
    bad = Section("Bad", status="failed", error="ValueError: x", seconds=0.1)
    text = render_report("Title", [ok, bad], run=run)
    assert "| Good | ok | 1.5 |" in text and "| Bad | failed | 0.1 |" in text
    assert "**This stage failed:** `ValueError: x`" in text
