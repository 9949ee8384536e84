"""``python -m bench.buffer``: the adaptive buffer against the 4-slot capacity fake.

Open-loop Poisson load (70% short, 30% long prompts) at 0.5x, 1x, 2x and 4x the fake's capacity, with
the buffer off and on; short-class TTFT under EDF and FCFS at 2x; L learned in Ollama mode (unknown slots)
and after the slots change; two replicas sharing Redis; stream coalescing at 2 ms between tokens and 64
streams. Each cell lasts a few seconds; the figures are printed, never judged. ``--seconds`` sets a cell's
length (default 12).
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from bench.buffer.coalescing import report as coalescing
from bench.buffer.probe import Shot, fake_stats
from bench.buffer.scenarios import (
    SLOTS,
    Cell,
    bodies,
    capacity_rps,
    limit_trace,
    load_cell,
    rig,
)
from bench.load.stats import percentile
from tests.support.redis_server import RedisServer

LOADS = (0.5, 1.0, 2.0, 4.0)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def ttfts(shots: list[Shot], cls: str | None = None) -> list[float]:
    return [s.ttft for s in shots if s.status == 200 and s.ttft is not None and cls in (None, s.cls)]


def p(values: list[float], q: float) -> float | None:
    return percentile(values, q)


def row(label: str, load: float, cell: Cell) -> str:
    shots = cell.shots
    ok = [s for s in shots if s.status == 200 and s.finished]
    shed = [s for s in shots if s.status in (429, 503)]
    reasons = Counter(s.code for s in shed)
    expired = reasons.pop("expired", 0)
    other = len(shots) - len(ok) - len(shed)
    with_retry = sum(s.retry_after for s in shed)
    shed_p99 = p([s.e2e for s in shed if s.code != "expired"], 99)
    short, long_ = ttfts(ok, "short"), ttfts(ok, "long")
    counts = f"{len(shots):>5} {len(ok):>5} {len(shed) - expired:>5} {expired:>4} {other:>4}"
    lat = [p(ttfts(ok), 50), p(ttfts(ok), 99), p(short, 50), p(short, 99), p(long_, 99)]
    retry = f"{with_retry / len(shed):.0%}" if shed else "-"
    return (
        f"{label:<12}{load:>4.1f}x {counts} {' '.join(f'{ms(v):>6}' for v in lat)}"
        f" {cell.slot_use:>6.0%} {ms(shed_p99):>6} {retry:>6}  {dict(reasons) or ''}"
    )


HEADER = (
    f"{'buffer':<12}{'load':>5} {'sent':>5} {'ok':>5} {'shed':>5} {'exp':>4} {'err':>4}"
    f" {'p50':>6} {'p99':>6} {'sh p50':>6} {'sh p99':>6} {'lg p99':>6} {'slots':>6} {'shed99':>6} {'R-A':>6}"
)


def served(cell: Cell, cls: str) -> str:
    mine = [s for s in cell.shots if s.cls == cls]
    return f"{sum(s.status == 200 for s in mine)}/{len(mine)}"


async def load_table(seconds: float) -> None:
    cap = capacity_rps()
    load = bodies()
    print(f"capacity fake: {SLOTS} slots, {cap:.1f} req/s at 1x (70% short / 30% long); TTFT in ms")
    print("ok = finished streams; shed = 429 at arrival; exp = 503 expired in the queue; err = other;")
    print("sh/lg = short/long class; slots = slot-time busy during the arrivals; shed99 = time to the")
    print("shed answer p99 (ms); R-A = shed answers carrying Retry-After and retry-after-ms in 1-60 s\n")
    print(HEADER)
    cells: dict[tuple[str, float], Cell] = {}
    with rig({"enabled": False}) as r:
        for x in LOADS:
            # The reference cell runs three times as long: its p99 sets the budgets and the goals.
            cells["off", x] = await load_cell(r, x * cap, seconds * (3 if x == 0.5 else 1), load)
            print(row("off", x, cells["off", x]), flush=True)
    ref = cells["off", 0.5].shots
    ref_all, ref_short = p(ttfts(ref), 99) or 0.5, p(ttfts(ref, "short"), 99) or 0.1
    # The operator's TTFT budgets, from the reference TTFT p99 (all classes): short questions get well
    # under it, long ones a little under the 2x the goal allows (their prefill comes after the queue).
    budgets = {"short": round(ref_all * 0.6, 3), "long": round(ref_all * 1.8, 3)}
    edf = {"budgets": budgets, "default_budget": budgets["long"]}
    with rig(edf) as r:
        for x in LOADS:
            cells["edf", x] = await load_cell(r, x * cap, seconds, load)
            print(row("on (EDF)", x, cells["edf", x]), flush=True)
    with rig({**edf, "order": "fifo"}) as r:
        cells["fifo", 2.0] = await load_cell(r, 2.0 * cap, seconds, load)
        print(row("on (FCFS)", 2.0, cells["fifo", 2.0]), flush=True)
    with rig({**edf, "reserve": {"short": 0.5}}) as r:
        cells["reserve", 2.0] = await load_cell(r, 2.0 * cap, seconds, load)
        print(row("EDF+reserve", 2.0, cells["reserve", 2.0]), flush=True)
    print(f"\nbudgets from the 0.5x reference (buffer off): short {ms(budgets['short'])} ms"
          f" (0.6 x its TTFT p99 over all classes), long {ms(budgets['long'])} ms (1.8 x)")  # fmt: skip
    for cls, ref_p99 in (("all", ref_all), ("short", ref_short)):
        pick = None if cls == "all" else cls
        for mode in ("off", "edf"):
            at4 = p(ttfts([s for s in cells[mode, 4.0].shots if s.finished], pick), 99)
            ratio = f"{at4 / ref_p99:.2f}x" if at4 else "-"
            print(f"  admitted TTFT p99, 4x against 0.5x, {cls:<5} buffer {mode:<3}: "
                  f"{ms(at4)} / {ms(ref_p99)} ms = {ratio}")  # fmt: skip
    half = cells["edf", 0.5].shots
    shed_half = sum(s.status in (429, 503) for s in half)
    grow = (p(ttfts(half), 50) or 0) - (p(ttfts(ref), 50) or 0)
    print(f"  at 0.5x with the buffer on: {shed_half} of {len(half)} shed; TTFT p50 on - off: {ms(grow)} ms")
    for x in LOADS:
        shots = cells["edf", x].shots
        expired = sum(s.code == "expired" for s in shots)
        admitted = sum(s.status == 200 for s in shots) + expired
        print(
            f"  queue expiries at {x}x: {expired} of {admitted} admitted ({expired / max(admitted, 1):.1%})"
        )
    print("  at 2x, short class (served/sent, TTFT p50 and p99 of the served):")
    for mode, label in (("edf", "EDF"), ("fifo", "FCFS"), ("reserve", "EDF, short reserve 0.5")):
        short = ttfts(cells[mode, 2.0].shots, "short")
        print(f"    {label:<22}: {served(cells[mode, 2.0], 'short'):>7}, p50 {ms(p(short, 50))} ms,"
              f" p99 {ms(p(short, 99))} ms; long served {served(cells[mode, 2.0], 'long')}")  # fmt: skip
    late = [s for s in cells["edf", 2.0].shots if s.cls == "long" and s.status == 200 and s.ttft is not None]
    over = sum(s.ttft > budgets["long"] + 0.2 for s in late if s.ttft is not None)
    print(f"  long requests at 2x served more than 200 ms past their budget: {over} of {len(late)}")


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


SCENARIOS = ("load", "convergence", "replicas", "coalescing")


async def run(seconds: float, only: set[str]) -> None:
    if "load" in only:
        await load_table(seconds)
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
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each load cell")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"some of {','.join(SCENARIOS)}")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, set(args.only.split(","))))


if __name__ == "__main__":
    main()
