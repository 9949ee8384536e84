"""The table and report.md: rows by load then endpoint, ratios to the baseline, per-class figures."""

from __future__ import annotations

from pathlib import Path

from bench.load import report
from bench.load.client import OK, SHED, Record
from bench.load.results import Results
from bench.load.runner import Cell
from bench.load.schedule import Load


def cell(endpoint: str, rate: float, ttft: float) -> Cell:
    short = [Record("short", i * 0.1, 0, 200, OK, "", ttft, ttft * 4, (), 4, 5, True) for i in range(10)]
    long = [
        Record("long", i * 0.1, 0, 200, OK, "", ttft * 10, ttft * 40, (), 40, 500, True) for i in range(5)
    ]
    shed = Record("short", 1.0, 0, 429, SHED, "rate_limit_exceeded", None, 0.001, (), 0, None, False, 2.0)
    return Cell(
        endpoint, f"http://{endpoint}/v1", "m", Load("rate", rate), 0, 2.0, 0.01, (*short, *long, shed)
    )


def run() -> Results:
    # Run in ABBA order, as plan.py does: the report puts the baseline first at every level anyway.
    cells = [cell("direct", 1, 0.02), cell("fluido", 1, 0.03), cell("fluido", 2, 0.2), cell("direct", 2, 0.1)]
    return Results({"command": "fluido bench"}, ["direct", "fluido"], cells)


def test_rows_go_by_load_then_endpoint_with_ratios_to_the_baseline() -> None:
    header, rows = report.table_rows(run())
    assert "model" not in header  # one model: named in the title instead
    assert [(r[0], r[1]) for r in rows] == [
        ("direct", "1 req/s"), ("fluido", "1 req/s"), ("direct", "2 req/s"), ("fluido", "2 req/s")
    ]  # fmt: skip
    ratio = header.index("TTFT p50 ratio")
    assert [r[ratio] for r in rows] == ["1.00", "1.50", "1.00", "2.00"]
    assert rows[0][header.index("ok/shed/err/cut")] == "15/1/0/0"


def test_report_has_the_table_the_classes_and_the_shed_details(tmp_path: Path) -> None:
    text = report.write_markdown(run(), tmp_path, [tmp_path / "ttft_vs_load.png"]).read_text()
    assert "| fluido | 2 req/s | 2.00 | 15/1/0/0 |" in text
    assert "| direct | m | 1 req/s | short | 10/1/0 | 20.0/20.0 | 80.0 |" in text
    assert "| direct | m | 1 req/s | long | 5/0/0 | 200/200 | 800 |" in text
    assert "1 of 1 shed with Retry-After" in text and "![ttft_vs_load](ttft_vs_load.png)" in text
