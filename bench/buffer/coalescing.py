"""The coalescing scenario: concurrent streams of 200 tokens from the capacity fake (vLLM flavour, one slot
per stream), through Fluido with coalescing off and on, in the order off, on, on, off (so a drift of the
shared machine weighs on both alike).

What it prints per cell, and where each figure is measured:
- SSE events per stream carrying text (client side);
- TTFT p50/p99 (client side, from the request's send to its first text);
- hold p50/p99: per event, how long its oldest delta (the one that waited longest) waited inside Fluido's
  coalescer, from the moment the adapter handed it over (when, without coalescing, it would have been
  written in that same step) to its hand-over to the writer (which writes it to the socket in that same
  step unless the socket is backed up). Read from Fluido's ``fluido_stream_coalesce_hold_seconds``
  histogram, interpolated within its buckets;
- late p50/p99: per token, how much later than its schedule the client read it. The fake sends token i at
  its first token's time plus i times the ITL; the client's schedule is the same from its own first token.
  This counts every delay on the way (the fake's, Fluido's and the client's own), with or without
  coalescing: on minus off is the delay coalescing adds as the client sees it;
- gap p99: time between two text events of a stream (client side);
- CPU: Fluido's on-CPU time (all threads) over the measured window, per stream and per 1000 tokens;
- the CPU of the fake and of the client (this process): the load generator must not be the bottleneck;
- sched p99: how late a process sleeping 1 ms at a time wakes up on this machine during the cell. Every
  hand-over between tasks in Fluido waits for a turn of its event loop, and on a shared machine a turn
  waits for a core: this is the floor under "hold" that no coalescing rule can remove.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.buffer.probe import scrape, session
from bench.buffer.scenarios import bodies, fake_args, fluido_config
from bench.load.stats import percentile
from bench.procs import Fleet, cpu_seconds

# A process that sleeps 1 ms at a time and prints, as JSON, how late it woke: p50 and p99 in seconds.
SCHED_PROBE = """
import sys, time, json
end, late = time.monotonic() + float(sys.argv[1]), []
while time.monotonic() < end:
    t = time.monotonic(); time.sleep(0.001); late.append(time.monotonic() - t - 0.001)
late.sort()
print(json.dumps([late[len(late) // 2], late[int(len(late) * 0.99)]]))
"""
TOKENS = 200
CELLS = ((64, 2.0), (16, 2.0), (64, 20.0))
HOLD = "fluido_stream_coalesce_hold_seconds"


@dataclass
class Read:
    """One stream as the client read it: when each text event came (seconds from the send) and how many
    tokens (words) it carried."""

    times: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    finished: bool = False


async def read_stream(s: aiohttp.ClientSession, url: str, body: bytes) -> Read:
    read = Read()
    t0 = time.perf_counter()
    async with s.post(url + "/v1/chat/completions", data=body) as resp:
        if resp.status != 200:
            await resp.read()
            return read
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            for choice in orjson.loads(line[6:]).get("choices") or ():
                if text := choice["delta"].get("content"):
                    read.times.append(time.perf_counter() - t0)
                    read.tokens.append(len(text.split()))
                read.finished = read.finished or bool(choice.get("finish_reason"))
    return read


@dataclass
class Figures:
    streams: int
    events: float  # text events per stream
    ttft: list[float]
    late: list[float]  # per token, seconds behind its schedule
    gaps: list[float]  # between text events of a stream
    hold: tuple[float | None, float | None]  # p50, p99 from Fluido's histogram
    deltas_per_event: float | None
    cpu: float  # Fluido's CPU seconds over the window
    tokens: int
    sched: tuple[float, float]  # p50, p99 of a 1 ms sleeper's lateness during the window
    loads: tuple[float, float]  # the fake's and the client's CPU, in cores, over the window


def lateness(read: Read, itl: float) -> list[float]:
    first = read.times[0]
    out, index = [], 0
    for at, n in zip(read.times, read.tokens, strict=True):
        for _ in range(n):
            out.append(at - first - index * itl)
            index += 1
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """Like Prometheus's histogram_quantile: linear within the bucket the quantile falls in."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v)
        for k, v in metrics.items()
        if k.startswith(name + "_bucket")
    )
    if not buckets or not buckets[-1][1]:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return None


@contextmanager
def fluido(coalesce: bool, streams: int, itl_ms: float) -> Iterator[tuple[str, int, int]]:
    """A capacity fake with a slot per stream, and Fluido in front of it: (Fluido's URL, its pid, the
    fake's pid)."""
    buffer = {"coalesce": coalesce, "upstreams": {"fake": {"parallel": streams, "adaptive": False}}}
    with Fleet() as fleet:
        args = fake_args("vllm", slots=streams, itl_ms=itl_ms)
        fake = fleet.start("fake", "tests.fakes.capacity", args, cpu=None)
        fleet.wait_listening(fake)
        cfg = orjson.dumps(fluido_config(f"http://127.0.0.1:{fake.port}", "vllm", buffer)).decode()
        proxy = fleet.start("fluido0", "bench.buffer.server", ["--config", cfg], cpu=None)
        fleet.wait_listening(proxy)
        yield f"http://127.0.0.1:{proxy.port}", proxy.pid, fake.pid


async def cell(coalesce: bool, streams: int, seconds: float, itl_ms: float) -> Figures:
    load = [body for _, body in bodies(seed=5, tokens={"short": TOKENS, "long": TOKENS})]
    with fluido(coalesce, streams, itl_ms) as (url, pid, fake_pid):
        async with session() as s:
            for body in load[:4]:  # two rounds of two: Fluido measures the upstream's pace
                await read_stream(s, url, body)
            before, cpu0 = await scrape(url), cpu_seconds(pid)
            others0 = (cpu_seconds(fake_pid), time.process_time(), time.monotonic())
            probe = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SCHED_PROBE, str(seconds), stdout=asyncio.subprocess.PIPE
            )
            t_end = time.monotonic() + seconds
            reads: list[Read] = []

            async def client(n: int) -> None:
                i = n
                while time.monotonic() < t_end:
                    reads.append(await read_stream(s, url, load[i % len(load)]))
                    i += streams

            await asyncio.gather(*(client(n) for n in range(streams)))
            cpu = cpu_seconds(pid) - cpu0
            wall = time.monotonic() - others0[2]
            loads = ((cpu_seconds(fake_pid) - others0[0]) / wall, (time.process_time() - others0[1]) / wall)
            after = await scrape(url)
            sched = orjson.loads((await probe.communicate())[0])
    done = [r for r in reads if r.finished and r.times]
    itl = itl_ms / 1000
    window = {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(HOLD)}
    events = after.get('fluido_stream_events_total{kind="events"}', 0) - before.get(
        'fluido_stream_events_total{kind="events"}', 0
    )
    deltas = after.get('fluido_stream_events_total{kind="deltas"}', 0) - before.get(
        'fluido_stream_events_total{kind="deltas"}', 0
    )
    return Figures(
        streams=len(done),
        events=sum(len(r.times) for r in done) / max(len(done), 1),
        ttft=[r.times[0] for r in done],
        late=[x for r in done for x in lateness(r, itl)],
        gaps=[b - a for r in done for a, b in zip(r.times, r.times[1:], strict=False)],
        hold=(histogram_quantile(window, HOLD, 0.5), histogram_quantile(window, HOLD, 0.99)),
        deltas_per_event=deltas / events if events else None,
        cpu=cpu,
        tokens=sum(sum(r.tokens) for r in done),
        sched=(sched[0], sched[1]),
        loads=loads,
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def hold_ms(value: float | None) -> str:
    """A quantile from the hold histogram: past 50 ms its buckets are too wide to interpolate in, so the
    bucket it falls in."""
    if value is None or value <= 0.05:
        return ms(value)
    lower = 0.05
    for upper in (0.1, 0.2, 0.5, 1.0):
        if value <= upper:
            return f"{lower * 1000:g}-{upper * 1000:g}"
        lower = upper
    return ">1000"


def line(label: str, f: Figures) -> str:
    p = percentile
    per_stream = f.cpu / max(f.streams, 1)
    per_k = f.cpu / max(f.tokens, 1) * 1000
    merged = f" ({f.deltas_per_event:.1f} deltas/event)" if f.deltas_per_event else ""
    return (
        f"    {label:<4} {f.streams:>5} {f.events:>7.1f} {ms(p(f.ttft, 50)):>7} {ms(p(f.ttft, 99)):>7}"
        f" {hold_ms(f.hold[0]):>7} {hold_ms(f.hold[1]):>7} {ms(p(f.late, 50)):>7} {ms(p(f.late, 99)):>7}"
        f" {ms(p(f.gaps, 99)):>7} {per_stream * 1000:>8.1f} {per_k * 1000:>8.1f} {ms(f.sched[1]):>6}"
        f" {f.loads[0]:>4.0%} {f.loads[1]:>4.0%}{merged}"
    )


HEADER = (
    f"    {'':<4} {'strms':>5} {'ev/str':>7} {'ttft50':>7} {'ttft99':>7} {'hold50':>7} {'hold99':>7}"
    f" {'late50':>7} {'late99':>7} {'gap99':>7} {'cpu/str':>8} {'cpu/ktk':>8} {'sched99':>6}"
    f" {'fake':>4} {'clnt':>4}"
)


async def report(seconds: float, cells: tuple[tuple[int, float], ...] = CELLS) -> None:
    print(f"\nCoalescing: concurrent streams of {TOKENS} tokens; coalescing off, on, on, off.")
    print("  times in ms; hold = per event, its oldest delta's wait in Fluido's coalescer; late = per token,")
    print("  behind its schedule as the client read it; gap99 = between text events; cpu = Fluido's CPU")
    print("  ms per stream and per 1000 tokens; sched99 = how late a 1 ms sleeper woke on this machine, p99;")
    print("  fake, clnt = CPU of the upstream fake and of this client, in % of one core")
    for streams, itl in cells:
        print(f"  {streams} streams, {itl:g} ms between tokens:")
        print(HEADER)
        got: dict[bool, list[Figures]] = {False: [], True: []}
        for on in (False, True, True, False):
            f = await cell(on, streams, seconds, itl)
            got[on].append(f)
            print(line("on" if on else "off", f), flush=True)
        events = {on: sum(f.events for f in runs) / len(runs) for on, runs in got.items()}
        cpu = {on: sum(f.cpu for f in runs) / max(sum(f.tokens for f in runs), 1) for on, runs in got.items()}
        if events[True]:
            print(
                f"    -> {events[False] / events[True]:.1f}x fewer SSE writes with coalescing;"
                f" Fluido CPU per token {cpu[True] / cpu[False] - 1:+.0%}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer.coalescing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each cell")
    parser.add_argument("--cells", default=",".join(f"{n}x{itl:g}" for n, itl in CELLS),
                        help="streams x ms between tokens, comma-separated")  # fmt: skip
    args = parser.parse_args()
    cells = tuple((int(n), float(itl)) for n, itl in (c.split("x") for c in args.cells.split(",")))
    asyncio.run(report(args.seconds, cells))


if __name__ == "__main__":
    main()
