"""Fluido's overhead: latency, throughput and CPU per request against a zero-delay upstream, next to a
direct connection and a bare pass-through proxy. ``python -m bench.overhead`` (``make bench``).

Every process is its own: the fake upstream, the bare pass-through, Fluido, and this one, which is the
load generator. The proxy under test is pinned alone to one core and the upstream and load generator
share the other, so the proxy never competes with its own load for a CPU. It prints figures and never
fails on a time: the targets are printed next to the figures, for information.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvloop

from bench.fluido_server import ALIAS
from bench.loadgen import BadReply, Connection, Samples, chat_request, connect, run_load
from bench.procs import Child, Fleet, cpu_seconds
from bench.upstream import MODEL, TOKENS

ADDED_P50_TARGET_MS = 0.8
THROUGHPUT_TARGET_PCT = 75.0
TARGETS = ("direct", "bare", "fluido")
MODES = ("json", "stream")
CONCURRENCY = (1, 16)


@dataclass(frozen=True)
class Plan:
    requests: dict[int, int]  # per case and concurrency, over all rounds
    warmup: dict[int, int]  # per case and round
    rounds: int
    max_case_seconds: float


@dataclass
class Server:
    name: str
    port: int
    model: str
    proxy: Child | None  # the process whose CPU is measured; None when talking to the upstream directly


@dataclass
class Result:
    """One case's samples and counters, summed over the rounds."""

    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    wall: float = 0.0
    proxy_cpu: float = 0.0
    side_cpu: float = 0.0  # upstream + load generator: the other core's load
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latency)

    @property
    def rps(self) -> float:
        return self.count / self.wall if self.wall else 0.0


def percentile_ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


def cases() -> Iterator[tuple[int, str, str]]:
    for concurrency in CONCURRENCY:
        for mode in MODES:
            for target in TARGETS:
                yield concurrency, mode, target


async def run_case(server: Server, upstream: Child, mode: str, concurrency: int, count: int, plan: Plan,
                   warmup: int, result: Result) -> None:  # fmt: skip
    stream = mode == "stream"
    raw = chat_request(server.model, stream)
    conns = await connect(server.port, concurrency)
    try:
        await _load(conns, raw, stream, warmup, plan.max_case_seconds, server.port, Result())
        # The generator's own garbage collection would add pauses that belong to no proxy.
        gc.collect()
        gc.disable()
        proxy0 = cpu_seconds(server.proxy.pid) if server.proxy else 0.0
        side0 = cpu_seconds(upstream.pid) + time.process_time()
        samples = await _load(conns, raw, stream, count, plan.max_case_seconds, server.port, result)
        side1 = cpu_seconds(upstream.pid) + time.process_time()
        proxy1 = cpu_seconds(server.proxy.pid) if server.proxy else 0.0
        gc.enable()
        result.latency += samples.latency
        result.ttft += samples.ttft
        result.wall += samples.wall
        result.proxy_cpu += proxy1 - proxy0
        result.side_cpu += side1 - side0
    finally:
        gc.enable()
        for conn in conns:
            conn.close()


async def _load(conns: list[Connection], raw: bytes, stream: bool, count: int, max_seconds: float, port: int,
                result: Result) -> Samples:  # fmt: skip
    """run_load, reconnecting and counting the error when a reply is bad, so one failure does not end
    the run (a proxy that fails under load is a finding, not a crash)."""
    samples = Samples()
    left = count
    started = time.perf_counter()
    while left > 0 and time.perf_counter() - started < max_seconds:
        try:
            part = await run_load(conns, raw, stream, left, max_seconds - (time.perf_counter() - started))
        except BadReply as exc:
            result.errors += 1
            if result.errors == 1:
                print(f"  error on port {port}: {exc}", file=sys.stderr)
            for conn in conns:
                conn.close()
            conns[:] = await connect(port, len(conns))
            continue
        samples.latency += part.latency
        samples.ttft += part.ttft
        samples.wall += part.wall
        left -= len(part.latency)
    return samples


async def run_all(servers: dict[str, Server], upstream: Child, plan: Plan) -> dict[tuple[int, str, str], Result]:
    results = {key: Result() for key in cases()}
    # Rounds interleave the cases, so a slow minute on the machine spreads over all of them alike.
    for rnd in range(plan.rounds):
        for concurrency, mode, target in cases():
            per_round = plan.requests[concurrency] // plan.rounds
            warmup = plan.warmup[concurrency] * (3 if rnd == 0 else 1)  # the first round also warms caches
            await run_case(servers[target], upstream, mode, concurrency, per_round, plan, warmup,
                           results[(concurrency, mode, target)])  # fmt: skip
    return results


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def report(results: dict[tuple[int, str, str], Result], plan: Plan, pinned: str, elapsed: float) -> None:
    print(f"proxy under test: one uvicorn worker, uvloop + httptools; {pinned}")
    print(f"upstream: zero-delay fake; a stream is a role chunk, {len(TOKENS)} content chunks, a finish chunk,")
    print("  a usage chunk and [DONE]. TTFT = time to the first data: frame carrying content.")
    print(f"requests per case: {plan.requests[1]} at c=1, {plan.requests[16]} at c=16, after warm-up, in "
          f"{plan.rounds} interleaved rounds; run took {elapsed:.0f} s")  # fmt: skip
    print()
    header = (
        f"{'target':<7} {'reply':<6} {'c':>2} {'reqs':>5} {'err':>3} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'ttft50':>7} {'ttft99':>7} {'cpu/req ms':>10} {'proxy cpu':>9} {'core1':>5}"
    )
    print(header)
    print("-" * len(header))
    for key in cases():
        concurrency, mode, target = key
        r = results[key]
        direct = target == "direct"
        cpu_req = float("nan") if direct or not r.count else r.proxy_cpu / r.count * 1000
        busy = "-" if direct or not r.wall else f"{r.proxy_cpu / r.wall * 100:.0f}%"
        side = f"{r.side_cpu / r.wall * 100:.0f}%" if r.wall else "-"
        print(
            f"{target:<7} {mode:<6} {concurrency:>2} {r.count:>5} {r.errors:>3} {r.rps:>7.0f} "
            f"{fmt(percentile_ms(r.latency, 0.5)):>7} {fmt(percentile_ms(r.latency, 0.99)):>7} "
            f"{fmt(percentile_ms(r.ttft, 0.5)):>7} {fmt(percentile_ms(r.ttft, 0.99)):>7} "
            f"{fmt(cpu_req):>10} {busy:>9} {side:>5}"
        )
        if target == TARGETS[-1] and key != list(cases())[-1]:
            print()
    print()
    print("p50/p99: the whole reply (for streams, through [DONE]); ttft50/ttft99: first content frame.")
    print("cpu/req: the proxy process's CPU time per request; proxy cpu: its share of core 0 during the case")
    print("(about 100% = the proxy is the bottleneck); core1: upstream + load generator share of core 1.")
    print()
    _derived(results)


def _derived(results: dict[tuple[int, str, str], Result]) -> None:
    def p50(c: int, mode: str, target: str, ttft: bool = False) -> float:
        r = results[(c, mode, target)]
        return percentile_ms(r.ttft if ttft else r.latency, 0.5)

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "misses target"

    print(f"Added p50 latency over direct at c=1 (target for Fluido: <= {ADDED_P50_TARGET_MS} ms):")
    for label, mode, ttft in (("non-stream", "json", False), ("stream TTFT", "stream", True),
                              ("stream full", "stream", False)):  # fmt: skip
        base = p50(1, mode, "direct", ttft)
        bare = p50(1, mode, "bare", ttft) - base
        fluido = p50(1, mode, "fluido", ttft) - base
        print(f"  {label:<12} bare {bare:+.3f} ms   Fluido {fluido:+.3f} ms   "
              f"({verdict(fluido <= ADDED_P50_TARGET_MS)}; Fluido over bare {fluido - bare:+.3f} ms)")  # fmt: skip
    print()
    print(f"Fluido throughput as a share of the bare pass-through at c=16 (target: >= {THROUGHPUT_TARGET_PCT:.0f}%):")
    for label, mode in (("non-stream", "json"), ("stream", "stream")):
        bare, fluido = results[(16, mode, "bare")], results[(16, mode, "fluido")]
        pct = fluido.rps / bare.rps * 100 if bare.rps else float("nan")
        print(f"  {label:<12} {fluido.rps:.0f} / {bare.rps:.0f} req/s = {pct:.1f}%   "
              f"({verdict(pct >= THROUGHPUT_TARGET_PCT)})")  # fmt: skip
    print()
    print("Proxy CPU per request (c=16, all rounds):")
    for label, mode in (("non-stream", "json"), ("stream", "stream")):
        bare, fluido = results[(16, mode, "bare")], results[(16, mode, "fluido")]
        b = bare.proxy_cpu / bare.count * 1000 if bare.count else float("nan")
        f = fluido.proxy_cpu / fluido.count * 1000 if fluido.count else float("nan")
        print(f"  {label:<12} bare {b:.3f} ms   Fluido {f:.3f} ms   (Fluido = {f / b:.2f}x bare)")


def pin_cores() -> tuple[int | None, int | None, str]:
    """(proxy core, generator core, description). With fewer than two usable cores nothing is pinned."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, f"NOT pinned: only {len(cores)} usable core(s), so figures mix proxy and load"
    proxy_core, load_core = cores[0], cores[1]
    os.sched_setaffinity(0, {load_core})
    return proxy_core, load_core, (
        f"pinned: proxy under test on core {proxy_core}, upstream + load generator on core {load_core}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Fluido's overhead over a zero-delay upstream.")
    parser.add_argument("--requests", type=int, default=3000, help="requests per case at c=1 (c=16: twice)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the requests are split into")
    parser.add_argument("--max-case-seconds", type=float, default=20.0, help="time limit of one case per round")
    args = parser.parse_args()
    plan = Plan(
        requests={1: args.requests, 16: args.requests * 2},
        warmup={1: 100, 16: 400},
        rounds=max(1, args.rounds),
        max_case_seconds=args.max_case_seconds,
    )
    proxy_core, load_core, pinned = pin_cores()
    started = time.monotonic()
    with Fleet() as fleet:
        upstream = fleet.start("upstream", "bench.upstream", [], load_core)
        fleet.wait_listening(upstream)
        base = f"http://127.0.0.1:{upstream.port}/v1"
        bare = fleet.start("bare", "bench.passthrough", ["--upstream", base], proxy_core)
        fluido = fleet.start("fluido", "bench.fluido_server", ["--upstream", base], proxy_core)
        fleet.wait_listening(bare)
        fleet.wait_listening(fluido)
        servers = {
            "direct": Server("direct", upstream.port, MODEL, None),
            "bare": Server("bare", bare.port, MODEL, bare),
            "fluido": Server("fluido", fluido.port, ALIAS, fluido),
        }
        try:
            results = uvloop.run(run_all(servers, upstream, plan))
        except Exception:
            for child in fleet.children:
                print(f"--- {child.name} log ({child.log}):\n{child.log_tail()}", file=sys.stderr)
            raise
    report(results, plan, pinned, time.monotonic() - started)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        sys.exit(130)
