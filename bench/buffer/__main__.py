"""``python -m bench.buffer``: the adaptive buffer against the 4-slot capacity fake.

Open-loop Poisson load (70% short, 30% long prompts) at 0.5x, 1x, 2x and 4x the fake's capacity, with
the buffer off and on; short-class TTFT under EDF and FCFS at 2x; L learned in Ollama mode (unknown slots)
and after the slots change; two replicas sharing Redis; stream coalescing at 2 ms between tokens and 64
streams. The figures are printed, never judged, and written with a plot of TTFT over time at 4x to
``--out`` (report.txt, buffer_ttft_over_time.png). ``--seconds`` sets a load cell's length: 60 by default
(the goals speak of a 60 s run); a shorter one gives a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.buffer.coalescing import report as coalescing
from bench.buffer.probe import fake_stats
from bench.buffer.scenarios import (
    bodies,
    capacity_rps,
    limit_trace,
    load_cell,
    rig,
)
from bench.buffer.shedpath import report as shed_report
from bench.buffer.table import load_table
from tests.support.redis_server import RedisServer


def settle(trace: list[tuple[int, int]], slots: int) -> tuple[int, list[int]]:
    """Completions until L stayed within +-1 of ``slots`` for the rest of the phase."""
    last_bad = max((c for c, limit in trace if abs(limit - slots) > 1), default=None)
    return (last_bad + 1 if last_bad is not None else 0), sorted({limit for _, limit in trace})


async def convergence() -> None:
    print("\nL in Ollama mode (slots unknown: L starts at 1), saturating closed loop of 12 clients:")
    plan = [(4, 80, "4 slots from the start"), (2, 50, "after 4 -> 2 slots"), (4, 50, "after 2 -> 4 slots")]
    with rig({}, mode="ollama") as r:
        traces = await limit_trace(r, 12, [(slots, n) for slots, n, _ in plan])
        stats = await fake_stats(r.fake)
    for (slots, _, label), trace in zip(plan, traces, strict=True):
        took, seen = settle(trace, slots)
        print(f"  {label:<24}: within +-1 of {slots} after {took} completions; L values seen {seen}")
        changes, last = [], None
        for done, limit in trace:
            if limit != last:
                changes.append(f"{done}:{limit}")
                last = limit
        print(f"    L by completion (completion:L at each change): {' '.join(changes)}")
    print(f"  upstream 503 'server busy' answers: {stats['rejected']}")


async def replicas(seconds: float) -> None:
    print("\nTwo Fluido replicas at 2x load in front of the 4-slot fake (L = 4 from /props):")
    load = bodies()
    server = RedisServer()
    server.start()
    try:
        for backend in ("redis", "memory"):
            sections: dict[str, Any] = {"limits": {"backend": backend}, "redis": {"url": server.url}}
            with rig({}, replicas=2, **sections) as r:
                cell = await load_cell(r, 2.0 * capacity_rps(), seconds, load)
                stats = await fake_stats(r.fake)
            ok = sum(s.status == 200 for s in cell.shots)
            other = Counter(s.code for s in cell.shots if s.status != 200)
            print(f"  {backend:<6}: fake's most running {stats['max_in_flight']}, most queued inside it"
                  f" {stats['max_waiting']}; {ok} of {len(cell.shots)} served"
                  f" {dict(other) or ''}")  # fmt: skip
    finally:
        server.stop()


SCENARIOS = ("load", "shedpath", "convergence", "replicas", "coalescing")


class Tee(io.TextIOBase):
    """Standard output that is also kept, for report.txt."""

    def __init__(self) -> None:
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        return self.kept.write(text)

    def flush(self) -> None:
        sys.__stdout__.flush()


async def run(seconds: float, only: set[str], out: Path) -> None:
    if "load" in only:
        await load_table(seconds, out)
    if "shedpath" in only:
        await shed_report()
    if "convergence" in only:
        await convergence()
    if "replicas" in only:
        await replicas(seconds)
    if "coalescing" in only:
        await coalescing(min(seconds, 8.0))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.buffer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each load cell (default 60)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"some of {','.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=Path("results/buffer"), help="report.txt and the plot")
    args = parser.parse_args()
    tee = Tee()
    with contextlib.redirect_stdout(tee):
        asyncio.run(run(args.seconds, set(args.only.split(",")), args.out))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.txt").write_text(tee.kept.getvalue())
    print(f"figures written to {args.out / 'report.txt'}")


if __name__ == "__main__":
    main()
