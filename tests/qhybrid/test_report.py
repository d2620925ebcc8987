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


def test_tables_lose_constant_columns_and_collapse_repeated_rows():
    from qhybrid.report import tidy_table

    rows = [{"n": n, "acc": 0.0 if n < 12 else 0.5, "model": "m"} for n in range(7, 15)]
    caption, tidy = tidy_table("T", rows)
    assert caption == "T (every row: model m)"
    assert tidy == [
        {"n": "7–11", "acc": 0.0},
        {"n": "12–14", "acc": 0.5},
    ]
    # two rows alike are not a run; short tables are left alone
    rows = [{"n": 1, "a": 1}, {"n": 2, "a": 1}, {"n": 3, "a": 2}, {"n": 4, "a": 3}]
    assert tidy_table("T", rows) == ("T", rows)
    assert tidy_table("T", rows[:2]) == ("T", rows[:2])
