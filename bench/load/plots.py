"""PNG plots of a run (matplotlib, Agg): TTFT percentiles and throughput against offered load, and the
latency distribution at each load. Drawn from Results alone, so ``--plot DIR`` redraws them from
results.json."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never look for a display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .client import OK
from .results import Results
from .runner import Cell
from .stats import Summary, summarize

DPI = 100
SIZE = (9.0, 5.0)  # inches: 900 x 500 pixels
TTFT_PNG, THROUGHPUT_PNG, CDF_PNG = "ttft_vs_load.png", "throughput_vs_load.png", "latency_cdf.png"
TIMELINE_PNG = "ttft_over_time.png"


def _series(results: Results) -> dict[str, list[tuple[Cell, Summary]]]:
    """Cells grouped by "endpoint / model", each group sorted by offered load."""
    groups: dict[str, list[tuple[Cell, Summary]]] = defaultdict(list)
    for cell in results.cells:
        groups[f"{cell.endpoint} / {cell.model}"].append((cell, summarize(cell)))
    return {k: sorted(v, key=lambda cs: cs[1].offered_rps) for k, v in groups.items()}


def _ms(v: float | None) -> float:
    return float("nan") if v is None else v * 1000


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)  # no bbox "tight": the pixel size stays what SIZE says
    plt.close(fig)
    return path


def ttft_vs_load(results: Results, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE, layout="constrained")
    for i, (name, cells) in enumerate(_series(results).items()):
        x = [s.offered_rps for _, s in cells]
        color = f"C{i}"
        for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            y = [_ms(getattr(s, f"ttft_{q}")) for _, s in cells]
            ax.plot(x, y, style, color=color, marker="o", markersize=4, label=f"{name} {q}")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("time to first token (ms)")
    ax.set_yscale("log")
    ax.set_title("Time to first token vs offered load (successful requests)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / TTFT_PNG)


def throughput_vs_load(results: Results, out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=SIZE, layout="constrained")
    top = 0.0
    for i, (name, cells) in enumerate(_series(results).items()):
        x = [s.offered_rps for _, s in cells]
        top = max(top, *x)
        left.plot(x, [s.completed_rps for _, s in cells], "-o", color=f"C{i}", markersize=4, label=name)
        missed = [(s.requests - s.ok) / s.requests if s.requests else 0.0 for _, s in cells]
        left.plot(x, [xi * sh for xi, sh in zip(x, missed, strict=True)], ":x", color=f"C{i}", markersize=4,
                  label=f"{name} not served")  # fmt: skip
        right.plot(x, [s.output_tps for _, s in cells], "-o", color=f"C{i}", markersize=4, label=name)
    left.plot([0, top], [0, top], color="grey", linewidth=0.8, alpha=0.6, label="offered")
    left.set_xlabel("offered load (requests/s)")
    left.set_ylabel("requests/s")
    left.set_title("Completed and not served (shed, failed, cut) requests/s")
    right.set_xlabel("offered load (requests/s)")
    right.set_ylabel("output tokens/s")
    right.set_title("Output tokens/s")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / THROUGHPUT_PNG)


def _cdf(ax: Axes, values: list[float], label: str, color: tuple[float, float, float, float]) -> None:
    if not values:
        return
    ordered = sorted(values)
    n = len(ordered)
    ax.step(
        [v * 1000 for v in ordered], [(i + 1) / n for i in range(n)], where="post", color=color, label=label
    )


def latency_cdf(results: Results, out: Path) -> Path:
    series = _series(results)
    rows = max(len(series), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(SIZE[0], 3.2 * rows), layout="constrained", squeeze=False)
    for row, (name, cells) in enumerate(series.items()):
        for j, (cell, s) in enumerate(cells):
            ok = [r for r in cell.records if r.outcome == OK]
            color = plt.get_cmap("viridis")(j / max(len(cells) - 1, 1))
            _cdf(axes[row][0], [r.ttft for r in ok if r.ttft is not None], s.load, color)
            _cdf(axes[row][1], [r.e2e for r in ok], s.load, color)
        for col, what in enumerate(("time to first token", "end-to-end latency")):
            ax = axes[row][col]
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis overlap
            ax.set_xlabel(f"{what} (ms)")
            ax.set_ylabel("share of requests")
            ax.set_title(f"{name}: {what}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, title="load", title_fontsize=7)
    return _save(fig, out / CDF_PNG)


def ttft_over_time(results: Results, out: Path) -> Path:
    """Each successful request's TTFT at the time it was sent: flat means the load is held, a ramp
    means a queue growing for as long as the level lasts."""
    series = _series(results)
    rows = max(len(series), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(SIZE[0], 3.2 * rows), layout="constrained", squeeze=False)
    for row, (name, cells) in enumerate(series.items()):
        ax = axes[row][0]
        for j, (cell, s) in enumerate(cells):
            ok = [r for r in cell.records if r.outcome == OK and r.ttft is not None]
            color = plt.get_cmap("viridis")(j / max(len(cells) - 1, 1))
            ax.scatter([r.sent for r in ok], [_ms(r.ttft) for r in ok], s=6, color=color, label=s.load)
        ax.set_yscale("log")
        ax.set_xlabel("sent at (s from the start of the level)")
        ax.set_ylabel("time to first token (ms)")
        ax.set_title(f"{name}: time to first token over each level", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="load", title_fontsize=7, markerscale=2)
    return _save(fig, out / TIMELINE_PNG)


def draw_all(results: Results, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        ttft_vs_load(results, out),
        throughput_vs_load(results, out),
        latency_cdf(results, out),
        ttft_over_time(results, out),
    ]
