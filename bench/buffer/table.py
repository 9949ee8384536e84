"""The load table: open-loop Poisson load at 0.5x-4x the fake's capacity with the buffer off, on (EDF), on
with first come first served, and on without the default reserves (short 0.25, long 0.25 of L) for
comparison; and the figures the buffer's goals are stated in. Printed, never judged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.buffer.floor import floor_run
from bench.buffer.plot import draw_timeline
from bench.buffer.probe import Shot, ttfts, window_p99s
from bench.buffer.scenarios import SLOTS, Cell, bodies, capacity_rps, cores, load_cell, rig, service_seconds
from bench.load.stats import percentile

LOADS = (0.5, 1.0, 2.0, 4.0)
WINDOW = 10.0  # seconds per window of the flatness check
# Of each load's arrivals, the share the shed-latency probe process sends: enough for 100 shed answers in
# a 60 s cell where the load sheds that many (at 1x the buffer sheds a few a minute: the probe sends every
# arrival there and times every shed answer of the cell). Its arrival figure does not depend on its loop
# being idle; its read figure does, and is shown with its loop's lag (see probes()).
PROBE_SHARE = {1.0: 1.0, 2.0: 0.6, 4.0: 0.3}
ENOUGH = 100  # answers for a p99: with fewer it lies between the two largest, the max by another name


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def ms1(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def p(values: list[float], q: float) -> float | None:
    return percentile(values, q)


def p99_or_max(values: list[float]) -> tuple[float | None, bool]:
    """The p99, or the max when there are too few values for a p99 (then True)."""
    return (p(values, 99), False) if len(values) >= ENOUGH else (max(values, default=None), True)


def tail(values: list[float]) -> str:
    """p50 / p99 / max in ms and the count; no p99 from fewer than ENOUGH values."""
    p99 = f"p99 {ms1(p(values, 99))}" if len(values) >= ENOUGH else "p99 -"
    return f"p50 {ms1(p(values, 50))} / {p99} / max {ms1(max(values, default=None))} ms ({len(values)})"


def shed_answers(shots: list[Shot]) -> list[Shot]:
    """Answers shed at arrival (expiries waited their budget first: not part of the shed-latency goal)."""
    return [s for s in shots if s.status in (429, 503) and s.code != "expired"]


def row(label: str, load: float, cell: Cell) -> str:
    shots = cell.shots
    ok = [s for s in shots if s.status == 200 and s.finished]
    shed = [s for s in shots if s.status in (429, 503)]
    reasons = Counter(s.code for s in shed)
    expired = reasons.pop("expired", 0)
    other = len(shots) - len(ok) - len(shed)
    with_retry = sum(s.retry_after for s in shed)
    early = shed_answers(shots)
    client99, few = p99_or_max([s.e2e for s in early])
    server99, _ = p99_or_max([s.server_ms / 1000 for s in early if s.server_ms is not None])
    short, long_ = ttfts(ok, "short"), ttfts(ok, "long")
    counts = f"{len(shots):>5} {len(ok):>5} {len(shed) - expired:>5} {expired:>4} {other:>4}"
    lat = [p(ttfts(ok), 50), p(ttfts(ok), 99), p(short, 50), p(short, 99), p(long_, 99)]
    retry = f"{with_retry / len(shed):.0%}" if shed else "-"
    mark = "*" if few and early else ""
    client, server = ms(client99) + mark, "-" if server99 is None else f"{server99 * 1000:.1f}{mark}"
    return (
        f"{label:<12}{load:>4.1f}x {counts} {' '.join(f'{ms(v):>6}' for v in lat)}"
        f" {cell.slot_use:>6.0%} {client:>6} {server:>6} {retry:>5}  {dict(reasons) or ''}"
    )


HEADER = (
    f"{'buffer':<12}{'load':>5} {'sent':>5} {'ok':>5} {'shed':>5} {'exp':>4} {'err':>4}"
    f" {'p50':>6} {'p99':>6} {'sh p50':>6} {'sh p99':>6} {'lg p99':>6} {'slots':>6}"
    f" {'shedC':>6} {'shedS':>6} {'R-A':>5}"
)
LEGEND = """\
ok = finished streams; shed = 429 at arrival; exp = 503 expired in the queue; err = other;
sh/lg = short/long class; slots = slot-time busy during the arrivals; R-A = shed answers carrying
Retry-After and retry-after-ms in 1-60 s. Shed latency p99 in ms (* the max: fewer than 100 shed
answers, too few for a p99), two ways:
  shedC = client side, send to the whole answer read, as the load generator saw it: it shares a core
          with the fake, so its own event-loop lag is in this figure;
  shedS = server side, Fluido's Server-Timing proxy;dur: from the request reaching Fluido's app (headers
          parsed) to the answer's headers, measured inside Fluido (no client or network time), waits
          for its core included (the summary gives them per cell).
Fluido runs on a core of its own, the fake, the load generator and the shed probe on the others: they
stand for other machines (on one core with Fluido they wake it late)."""


def served(cell: Cell, cls: str) -> str:
    mine = [s for s in cell.shots if s.cls == cls]
    return f"{sum(s.status == 200 for s in mine)}/{len(mine)}"


def windows(shots: list[Shot], cls: str | None = None) -> str:
    """Admitted TTFT p99 per WINDOW seconds of send time (the served count in brackets)."""
    if not shots:
        return "-"
    return " ".join(f"{ms(p99):>6}({n})" for _, p99, n in window_p99s(shots, WINDOW, cls))


def starved(cell: Cell, budget: float) -> tuple[int, int, int, int]:
    """Long requests (served, served after waiting past their budget, expired after waiting it, given up
    by the client): the last three waited their budget without being served in time or shed at arrival."""
    longs = [s for s in cell.shots if s.cls == "long"]
    ok = [s for s in longs if s.status == 200]
    late = sum(1 for s in ok if s.queue_ms is not None and s.queue_ms / 1000 > budget)
    expired = sum(1 for s in longs if s.code == "expired")
    gave_up = sum(1 for s in longs if s.status == 0)
    return len(ok), late, expired, gave_up


async def load_table(seconds: float, out: Path) -> None:
    cap = capacity_rps()
    load = bodies(count=int(4.0 * cap * max(seconds, 60) * 1.3))
    print(f"capacity fake: {SLOTS} slots, {cap:.1f} req/s at 1x (70% short / 30% long); TTFT in ms")
    print(f"{seconds:g} s of arrivals per cell (the 0.5x reference, buffer off: 3x as long if < 30 s)")
    print(LEGEND + "\n")
    print(HEADER)
    cells: dict[tuple[str, float], Cell] = {}
    with rig({"enabled": False}) as r:
        for x in LOADS:
            # The reference cell's p99 sets the budgets and the goals: long enough for a steady p99.
            length = seconds * 3 if x == 0.5 and seconds < 30 else seconds
            cells["off", x] = await load_cell(r, x * cap, length, load)
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
    # Shed latency from the client side without the load generator's own lag: a share of the arrivals
    # from a process of its own (the same total rate).
    with rig(edf) as r:
        for x, share in PROBE_SHARE.items():
            cells["probe", x] = await load_cell(r, x * cap, seconds, load, probe_share=share)
    # The machine's own floor for such an answer, at the probe's rate at 4x (2x's is the same).
    cells["floor", 4.0] = Cell([], 0.0, seconds)
    cells["floor", 4.0].probe = await floor_run(*cores(), 4.0 * cap * PROBE_SHARE[4.0], seconds)
    # First come, first served as a plain FIFO proxy queue: arrival order and one common budget (the long
    # one: a FIFO queue knows no classes), with the same admission and shedding rules.
    with rig({**edf, "order": "fifo"}) as r:
        cells["fifo", 2.0] = await load_cell(r, 2.0 * cap, seconds, load)
        print(row("on (FCFS)", 2.0, cells["fifo", 2.0]), flush=True)
    # The default reserves taken away: what they cost and buy (see the summary).
    with rig({**edf, "reserve": {"short": 0, "long": 0}}) as r:
        for x in (0.5, 2.0, 4.0):
            cells["bare", x] = await load_cell(r, x * cap, seconds, load)
            print(row("no reserve", x, cells["bare", x]), flush=True)
    summary(cells, budgets, ref_all, ref_short)
    path = draw_timeline(cells["off", 4.0].shots, cells["edf", 4.0].shots, WINDOW, out)
    print(f"\n  plot of TTFT over time at 4x, buffer off and on: {path}")


def core(cell: Cell) -> str:
    """Fluido's share of its core and its time ready to run but waiting for it: a server-side tail well
    above Fluido's CPU per answer with much waiting is the core's, not Fluido's loop."""
    per_run = cell.fluido_wait * cell.seconds / max(cell.fluido_runs, 1)
    return (f"Fluido on CPU {cell.fluido_cpu:.0%} of its core, waiting for it"
            f" {cell.fluido_wait * 1000:.0f} ms/s ({per_run * 1e6:.0f} us a run)")  # fmt: skip


def probe_figures(cell: Cell) -> list[tuple[str, list[float]]]:
    """The probe's shed answers (not expiries), from the kernel's transmit stamp of the request: when each
    reached the probe's socket (the kernel's receive stamp), when the probe read it, how long the read came
    after the arrival; the probe's own wait before its request left; Fluido's own time for the same
    answers; seconds."""
    shed = [s for s in cell.probe if s["status"] in (429, 503) and s["code"] != "expired"]
    stamped = [s for s in shed if s.get("arrive") is not None]
    return [
        ("arrive at the probe's socket (kernel receive stamp)", [float(s["arrive"]) for s in stamped]),
        ("read by the probe (its parser, user space)", [float(s["e2e"]) for s in shed]),
        ("  of which the read after the arrival", [float(s["e2e"]) - float(s["arrive"]) for s in stamped]),
        ("server side (Fluido's Server-Timing)",
         [float(s["server_ms"]) / 1000 for s in shed if s.get("server_ms") is not None]),
        ("before: the probe's clock read to its transmit stamp",
         [float(s["write"]) for s in shed if s.get("write") is not None]),
    ]  # fmt: skip


def probes(cells: dict[tuple[str, float], Cell]) -> None:
    """Shed answers timed by the probe process, from the kernel's transmit stamp of its request: when the
    answer's last byte reached its socket, stamped by the kernel (the shed-latency goal's figure: it waits
    neither for the probe to get a core before its write nor after the answer), and when the probe read
    it; against the load generator in the same cell (its loop also reading every admitted stream, timed
    from before its write); each loop's own lag (a 5 ms timer's lateness)."""
    print(f"  shed answers timed by a process of its own (p50 / p99 / max, answers; a p99 from {ENOUGH}"
          " answers or more), from the request's transmit stamp:")  # fmt: skip
    for x, share in PROBE_SHARE.items():
        cell = cells["probe", x]
        print(f"    {x}x, the probe sending {share:.0%} of the arrivals (its loop lag p99"
              f" {ms1(cell.probe_lag_p99)} ms); {core(cell)}:")  # fmt: skip
        for label, values in probe_figures(cell):
            print(f"      {label:<52} {tail(values)}")
        if cell.shots:
            gen = [s.e2e for s in shed_answers(cell.shots)]
            print(f"      {'the load generator, read (aiohttp, user space)':<52} {tail(gen)};"
                  f" its loop lag p99 {ms1(cell.lag_p99)} ms")  # fmt: skip
    floor = [float(s["arrive"]) for s in cells["floor", 4.0].probe if s.get("arrive") is not None]
    print(
        "    the floor: a minimal ASGI app on the same HTTP server and core answering 429 at once, at 4x's"
        " probe rate, nothing else running:"
    )
    print(f"      {'arrive at the probe socket (kernel receive stamp)':<52} {tail(floor)}")


def reserves(cells: dict[tuple[str, float], Cell]) -> None:
    """The default reserves against none: served per class, the long class's share of the slot time it
    was served in (served x its holding time on the fake), shed at arrival, slot use."""
    print("  reserves (default: short 0.25, long 0.25 of L) against none (served/sent per class):")
    for x in (0.5, 2.0, 4.0):
        for mode, label in (("edf", "reserves"), ("bare", "none")):
            cell = cells[mode, x]
            long_busy = sum(s.status == 200 for s in cell.shots if s.cls == "long") * service_seconds("long")
            share = long_busy / (SLOTS * cell.seconds)
            shed = len(shed_answers(cell.shots))
            print(f"    {x}x {label:<8}: short {served(cell, 'short'):>9}, long {served(cell, 'long'):>9}"
                  f" (long's slot share {share:.0%}); shed {shed} ({shed / len(cell.shots):.2%});"
                  f" slots {cell.slot_use:.0%}; TTFT p99 {ms(p(ttfts(cell.shots), 99))} ms")  # fmt: skip


def summary(cells: dict[tuple[str, float], Cell], budgets: dict[str, float], ref_all: float,
            ref_short: float) -> None:  # fmt: skip
    ref = cells["off", 0.5].shots
    print(f"\nbudgets from the 0.5x reference (buffer off): short {ms(budgets['short'])} ms"
          f" (0.6 x its TTFT p99 over all classes), long {ms(budgets['long'])} ms (1.8 x)")  # fmt: skip
    for cls, ref_p99 in (("all", ref_all), ("short", ref_short)):
        pick = None if cls == "all" else cls
        for mode in ("off", "edf"):
            at4 = p(ttfts([s for s in cells[mode, 4.0].shots if s.finished], pick), 99)
            ratio = f"{at4 / ref_p99:.2f}x" if at4 else "-"
            print(f"  admitted TTFT p99, 4x against 0.5x, {cls:<5} buffer {mode:<3}: "
                  f"{ms(at4)} / {ms(ref_p99)} ms = {ratio}")  # fmt: skip
    print(f"  admitted TTFT p99 per {WINDOW:g} s of send time, ms (served in brackets):")
    flat: list[tuple[str, tuple[str, float], str | None]] = [
        ("off 4x", ("off", 4.0), None),
        ("on 4x", ("edf", 4.0), None),
        ("on 4x short", ("edf", 4.0), "short"),
        ("on 0.5x", ("edf", 0.5), None),
    ]
    for label, key, cls in flat:
        print(f"    {label:<12}: {windows(cells[key].shots, cls)}")
    half = cells["edf", 0.5].shots
    shed_half = sum(s.status in (429, 503) for s in half)
    grow = (p(ttfts(half), 50) or 0) - (p(ttfts(ref), 50) or 0)
    print(f"  at 0.5x with the buffer on: {shed_half} of {len(half)} shed; TTFT p50 on - off: {ms(grow)} ms")
    reserves(cells)
    for x in LOADS:
        shots = cells["edf", x].shots
        expired = sum(s.code == "expired" for s in shots)
        admitted = sum(s.status == 200 for s in shots) + expired
        early = shed_answers(shots)
        server = [s.server_ms / 1000 for s in early if s.server_ms is not None]
        share = expired / max(admitted, 1)
        print(
            f"  at {x}x: queue expiries {expired} of {admitted} admitted ({share:.1%}); shed at arrival:"
            f" client {tail([s.e2e for s in early])}, server {tail(server)}; {core(cells['edf', x])}"
        )
    probes(cells)
    print("  at 2x, short class (served/sent, TTFT p50 and p99 of the served):")
    fifo_p50 = p(ttfts(cells["fifo", 2.0].shots, "short"), 50)
    for mode, label in (("edf", "EDF"), ("fifo", "FCFS"), ("bare", "EDF, no reserve")):
        short = ttfts(cells[mode, 2.0].shots, "short")
        lower = p(short, 50)
        vs = ""
        if lower and fifo_p50 and mode != "fifo":
            vs = f", {1 - lower / fifo_p50:.0%} lower p50 than FCFS"
        print(f"    {label:<23}: {served(cells[mode, 2.0], 'short'):>9}, p50 {ms(lower)} ms,"
              f" p99 {ms(p(short, 99))} ms; long served {served(cells[mode, 2.0], 'long')}{vs}")  # fmt: skip
    print(f"  long requests that waited past their budget ({ms(budgets['long'])} ms) without being served in"
          " time or shed at arrival (served late / expired / given up, of served):")  # fmt: skip
    for mode, x in (("edf", 1.0), ("edf", 2.0), ("edf", 4.0), ("fifo", 2.0), ("bare", 2.0), ("bare", 4.0)):
        ok, late, expired, gave_up = starved(cells[mode, x], budgets["long"])
        print(f"    {mode:<8}{x}x: {late + expired + gave_up} ({late} / {expired} / {gave_up}, of {ok})")
