"""The load table's plot: each request's TTFT against its send time at 4x, buffer off and on, with the
p99 of each window. matplotlib (the bench extra), Agg: files only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never look for a display
import matplotlib.pyplot as plt

from bench.buffer.probe import Shot, window_p99s

TIMELINE_PNG = "buffer_ttft_over_time.png"


def draw_timeline(off: list[Shot], on: list[Shot], window: float, out: Path) -> Path:
    """TTFT (ms, log scale) of every served request against its send time; returns the PNG's path."""
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9.0, 5.0), dpi=100)
    for shots, label, color in ((off, "buffer off", "tab:red"), (on, "buffer on (EDF)", "tab:blue")):
        served = [s for s in shots if s.status == 200 and s.ttft is not None]
        ax.scatter([s.sent_at for s in served], [(s.ttft or 0.0) * 1000 for s in served], s=4, alpha=0.35,
                   color=color, label=f"{label}: TTFT of each served request")  # fmt: skip
        rows = [(mid, p99 * 1000) for mid, p99, _ in window_p99s(served, window) if p99 is not None]
        xs, ys = [mid for mid, _ in rows], [p99 for _, p99 in rows]
        ax.plot(xs, ys, color=color, marker="o", label=f"{label}: p99 per {window:g} s")
    ax.set_yscale("log")
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title("TTFT over time at 4x the fake's capacity (4 slots, 70% short / 30% long)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = out / TIMELINE_PNG
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
