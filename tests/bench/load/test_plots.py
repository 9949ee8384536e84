"""Plots: written, readable PNGs of the expected size, redrawn from results.json alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
from PIL import Image

from bench.load import plots, results
from bench.load.cli import main
from bench.load.client import OK, SHED, Record
from bench.load.runner import Cell
from bench.load.schedule import Load


def cell(endpoint: str, rate: float) -> Cell:
    """20 successes slower as the rate grows, and one 429 (values exact at results.json's precision)."""
    ok = [
        Record(
            "short",
            i / rate,
            0.0,
            200,
            OK,
            "",
            round(0.05 * rate + 0.001 * i, 6),
            0.4 * rate,
            (0.01,) * 9,
            10,
            12,
            True,
        )
        for i in range(20)
    ]
    shed = Record("long", 0.5, 0.0, 429, SHED, "rate_limit_exceeded", None, 0.002, (), 0, None, False)
    return Cell(endpoint, f"http://{endpoint}/v1", "m", Load("rate", rate), 0.0, 20 / rate, 0.01, (*ok, shed))


@pytest.fixture
def run() -> results.Results:
    cells = [cell(e, r) for r in (0.5, 1, 2, 4) for e in ("direct", "fluido")]
    return results.Results({"command": "fluido bench --rate 0.5,1,2,4"}, ["direct", "fluido"], cells)


def test_every_plot_is_a_readable_png_of_the_expected_size(run: results.Results, tmp_path: Path) -> None:
    paths = plots.draw_all(run, tmp_path)
    assert [p.name for p in paths] == [
        plots.TTFT_PNG,
        plots.THROUGHPUT_PNG,
        plots.CDF_PNG,
        plots.TIMELINE_PNG,
    ]
    expected = {
        plots.TTFT_PNG: (900, 500),
        plots.THROUGHPUT_PNG: (900, 500),
        plots.CDF_PNG: (900, 640),  # one row per endpoint and model, 320 px each
        plots.TIMELINE_PNG: (900, 640),
    }
    for path in paths:
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == expected[path.name]
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 50  # something is drawn, not a blank canvas
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == expected[path.name][::-1]


def test_plot_redraws_plots_and_report_from_results_json_alone(run: results.Results, tmp_path: Path) -> None:
    results.write(run, tmp_path)
    assert not list(tmp_path.glob("*.png"))
    assert main(["--plot", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        [plots.TTFT_PNG, plots.THROUGHPUT_PNG, plots.CDF_PNG, plots.TIMELINE_PNG]
    )
    assert "| direct | 4 req/s |" in (tmp_path / "report.md").read_text()
    again = results.read(tmp_path / "results.json")
    assert again.cells == run.cells and again.endpoints == run.endpoints


def test_a_file_that_is_not_results_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"cells": []}')
    with pytest.raises(ValueError, match="not a fluido bench results file"):
        results.read(tmp_path)
