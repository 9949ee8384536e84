"""Fluido's overhead: latency, throughput and CPU per request against a zero-delay upstream, next to a
direct connection and a bare pass-through proxy. ``python -m bench.overhead`` (``make bench``).

Every process is its own: the fake upstream, the bare pass-through, Fluido, and this one, which is the
load generator. The proxy under test is pinned alone to one core and the upstream and load generator
share the other, so the proxy never competes with its own load for a CPU. It prints figures and never
fails on a time: the targets are printed next to the figures, for information.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvloop

from bench.fluido_server import ALIAS
from bench.loadgen import chat_request, connect, run_load
from bench.procs import Child, Fleet, core_seconds, cpu_seconds
from bench.upstream import MODEL, TOKENS

ADDED_P50_TARGET_MS = 0.8
THROUGHPUT_TARGET_PCT = 75.0
# core: Fluido's proxy alone; obs: with access log and metrics; fluido: as shipped (query classifier too).
TARGETS = ("direct", "bare", "core", "obs", "fluido")
FEATURES = {"core": "core", "obs": "observed", "fluido": "default"}
MODES = ("json", "stream")
CONCURRENCY = (1, 16)
Key = tuple[int, str, str]  # (concurrency, mode, target)


@dataclass(frozen=True)
class Plan:
    requests: dict[int, int]  # per case, over all rounds, by concurrency
    warmup: dict[int, int]  # per case and round, by concurrency
    rounds: int
    max_case_seconds: float  # per case and round
    proxy_core: int | None
    load_core: int | None


@dataclass(frozen=True)
class Server:
    port: int
    model: str
    proxy: Child | None  # the process whose CPU is measured; None when talking to the upstream directly


@dataclass(frozen=True)
class Round:
    """One case's counters in one round."""

    count: int
    wall: float
    proxy_cpu: float
    side_cpu: float  # upstream + load generator
    core0_other: float  # the proxy core's busy time not spent by the proxy
    core0_steal: float
    core1_other: float  # the load core's busy time not spent by the upstream or the load generator

    @property
    def rps(self) -> float:
        return self.count / self.wall if self.wall else 0.0


@dataclass
class Result:
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latency)

    @property
    def wall(self) -> float:
        return sum(r.wall for r in self.rounds)

    @property
    def rps(self) -> float:
        # The median round: one round disturbed by another process on the machine does not move it.
        return _median([r.rps for r in self.rounds if r.count])

    @property
    def cpu_per_request_ms(self) -> float:
        return _median([r.proxy_cpu / r.count * 1000 for r in self.rounds if r.count])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile_ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


def cases() -> Iterator[Key]:
    # Bare and Fluido run back to back in every round, so what they are compared on is measured close in time.
    for concurrency in CONCURRENCY:
        for mode in MODES:
            for target in TARGETS:
                yield concurrency, mode, target


async def run_case(server: Server, upstream: Child, key: Key, count: int, warmup: int, plan: Plan,
                   result: Result) -> None:  # fmt: skip
    concurrency, mode, _ = key
    stream = mode == "stream"
    raw = chat_request(server.model, stream)
    conns = await connect(server.port, concurrency)
    cores = (plan.proxy_core or 0, plan.load_core or 0)
    try:
        warm = await run_load(server.port, conns, raw, stream, warmup, plan.max_case_seconds)
        # The generator's own garbage collection would add pauses that belong to no proxy.
        gc.collect()
        gc.disable()
        proxy0 = cpu_seconds(server.proxy.pid) if server.proxy else 0.0
        side0 = cpu_seconds(upstream.pid) + time.process_time()
        (busy0, steal0), (load0, _) = (core_seconds(c) for c in cores)
        samples = await run_load(server.port, conns, raw, stream, count, plan.max_case_seconds)
        (busy1, steal1), (load1, _) = (core_seconds(c) for c in cores)
        side1 = cpu_seconds(upstream.pid) + time.process_time()
        proxy1 = cpu_seconds(server.proxy.pid) if server.proxy else 0.0
    finally:
        gc.enable()
        for conn in conns:
            conn.close()
    for bad in (warm, samples):
        if bad.errors and not result.errors:
            print(f"  {key}: {bad.errors} bad replies, first: {bad.first_error}", file=sys.stderr)
        result.errors += bad.errors
    result.latency += samples.latency
    result.ttft += samples.ttft
    proxy_cpu, side_cpu = proxy1 - proxy0, side1 - side0
    result.rounds.append(
        Round(
            count=len(samples.latency),
            wall=samples.wall,
            proxy_cpu=proxy_cpu,
            side_cpu=side_cpu,
            core0_other=max(0.0, busy1 - busy0 - proxy_cpu) if server.proxy else 0.0,
            core0_steal=steal1 - steal0,
            core1_other=max(0.0, load1 - load0 - side_cpu),
        )
    )


async def run_all(servers: dict[str, Server], upstream: Child, plan: Plan) -> dict[Key, Result]:
    results = {key: Result() for key in cases()}
    # Rounds interleave the cases, so a slow minute on the machine spreads over all of them alike.
    for rnd in range(plan.rounds):
        for key in cases():
            concurrency, _, target = key
            warmup = plan.warmup[concurrency] * (5 if rnd == 0 else 1)  # the first round also fills caches
            count = plan.requests[concurrency] // plan.rounds
            await run_case(servers[target], upstream, key, count, warmup, plan, results[key])
    return results


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def report(results: dict[Key, Result], plan: Plan, pinned: str, elapsed: float, per_round: bool) -> None:
    print("Fluido overhead benchmark (127.0.0.1 only, zero-delay fake upstream)")
    print(f"  proxies: one uvicorn worker each, uvloop + httptools; {pinned}")
    print("  Fluido: its default settings (access log, metrics, ...), one OpenAI-compatible upstream")
    print(f"  stream: role chunk, {len(TOKENS)} content chunks, finish chunk, usage chunk, [DONE]")
    print(f"  requests per case: {plan.requests[1]} at c=1, {plan.requests[16]} at c=16, after warm-up,")
    print(f"  in {plan.rounds} interleaved rounds; run took {elapsed:.0f} s")
    print()
    header = (
        f"{'target':<7}{'reply':<7}{'c':>3}{'reqs':>7}{'err':>4}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'ttft50':>8}{'ttft99':>8}{'cpu/req ms':>11}{'core0':>7}{'core1':>7}"
    )
    print(header)
    print("-" * len(header))
    last = list(cases())[-1]
    for key in cases():
        concurrency, mode, target = key
        r = results[key]
        direct = target == "direct"
        wall = r.wall
        core0 = "-" if direct or not wall else f"{sum(x.proxy_cpu for x in r.rounds) / wall * 100:.0f}%"
        core1 = f"{sum(x.side_cpu for x in r.rounds) / wall * 100:.0f}%" if wall else "-"
        print(
            f"{target:<7}{mode:<7}{concurrency:>3}{r.count:>7}{r.errors:>4}{r.rps:>8.0f}"
            f"{fmt(percentile_ms(r.latency, 0.5)):>8}{fmt(percentile_ms(r.latency, 0.99)):>8}"
            f"{fmt(percentile_ms(r.ttft, 0.5)):>8}{fmt(percentile_ms(r.ttft, 0.99)):>8}"
            f"{fmt(float('nan') if direct else r.cpu_per_request_ms):>11}{core0:>7}{core1:>7}"
        )
        if target == TARGETS[-1] and key != last:
            print()
    print()
    print("p50/p99: whole reply (streams: through [DONE]); ttft50/99: first data: frame carrying content.")
    print("req/s and cpu/req: median of the rounds. cpu/req: the proxy process's CPU time per request.")
    print("core0: the proxy's share of its core (~100%: the proxy is the bottleneck); core1: the upstream's")
    print("and load generator's share of theirs (direct rows are bound by it: a reference, not a limit).")
    _noise(results)
    print()
    _derived(results)
    if per_round:
        print()
        print("req/s per round (c=16):")
        for key in cases():
            if key[0] == 16:
                rates = " ".join(f"{r.rps:6.0f}" for r in results[key].rounds)
                print(f"  {key[2]:<7}{key[1]:<7}{rates}")


def _noise(results: dict[Key, Result]) -> None:
    """How much of the proxy's core something else took: the figures are only as good as this is small."""
    rounds = [r for key, res in results.items() if key[2] != "direct" for r in res.rounds]
    wall = sum(r.wall for r in rounds)
    if not wall:
        return
    other = sum(r.core0_other for r in rounds) / wall * 100
    steal = sum(r.core0_steal for r in rounds) / wall * 100
    load = sum(r.core1_other for r in rounds) / wall * 100
    note = "quiet" if max(other + steal, load) < 5 else "BUSY: other work competed, figures are noisier"
    print(f"Other processes during the proxy cases: {other:.1f}% of core 0 (+{steal:.1f}% stolen by the "
          f"hypervisor), {load:.1f}% of core 1 ({note})")  # fmt: skip


def _derived(results: dict[Key, Result]) -> None:
    def p50(c: int, mode: str, target: str, ttft: bool = False) -> float:
        r = results[(c, mode, target)]
        return percentile_ms(r.ttft if ttft else r.latency, 0.5)

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "misses target"

    print(f"Added p50 latency over direct at c=1 (target for Fluido: <= {ADDED_P50_TARGET_MS} ms)")
    for label, mode, ttft in (("non-stream", "json", False), ("stream TTFT", "stream", True),
                              ("stream full", "stream", False)):  # fmt: skip
        base = p50(1, mode, "direct", ttft)
        bare = p50(1, mode, "bare", ttft) - base
        added = {t: p50(1, mode, t, ttft) - base for t in FEATURES}
        ok = verdict(added["core"] <= ADDED_P50_TARGET_MS)
        print(f"  {label:<12} bare {bare:+.3f}  core {added['core']:+.3f} [{ok}]  obs {added['obs']:+.3f}  "
              f"fluido {added['fluido']:+.3f} ms")  # fmt: skip
    print()
    print("Cost of the access log + metrics (obs - core) and of the classifier (fluido - obs), p50 at c=1:")
    for label, mode in (("non-stream", "json"), ("stream full", "stream")):
        core, obs, full = (p50(1, mode, t) for t in FEATURES)
        cpu = {t: results[(1, mode, t)].cpu_per_request_ms for t in FEATURES}
        logging_cpu, classifier_cpu = cpu["obs"] - cpu["core"], cpu["fluido"] - cpu["obs"]
        print(f"  {label:<12} logging+metrics {obs - core:+.3f} ms (CPU {logging_cpu:+.3f} ms/req)   "
              f"classifier {full - obs:+.3f} ms (CPU {classifier_cpu:+.3f} ms/req)")  # fmt: skip
    print()
    print(
        f"Throughput as % of the bare pass-through at c=16 (target for core: >= {THROUGHPUT_TARGET_PCT:g}%)"
    )
    for (label, mode), target in itertools.product((("non-stream", "json"), ("stream", "stream")), FEATURES):
        floor, ours = results[(16, mode, "bare")], results[(16, mode, target)]
        # Per round, bare and Fluido ran back to back: the median of those ratios resists drift.
        pct = _median([f.rps / b.rps * 100 for b, f in zip(floor.rounds, ours.rounds, strict=True) if b.rps])
        # Saturated, a proxy's capacity is 1 / its CPU per request: a steadier estimate of the same ratio.
        by_cpu = floor.cpu_per_request_ms / ours.cpu_per_request_ms * 100
        print(f"  {label:<12}{target:<7} {ours.rps:.0f} vs {floor.rps:.0f} req/s = {pct:.1f}%   "
              f"[{verdict(pct >= THROUGHPUT_TARGET_PCT)}]   by CPU per request: {by_cpu:.1f}% "
              f"({ours.cpu_per_request_ms:.3f} vs {floor.cpu_per_request_ms:.3f} ms)")  # fmt: skip


def pin_cores() -> tuple[int | None, int | None, str]:
    """(proxy core, generator core, description). With fewer than two usable cores nothing is pinned."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, f"NOT pinned: only {len(cores)} usable core(s), so proxy and load share a CPU"
    proxy_core, load_core = cores[0], cores[1]
    os.sched_setaffinity(0, {load_core})
    return proxy_core, load_core, f"proxy on core {proxy_core}, upstream + load generator on core {load_core}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Fluido's overhead over a zero-delay upstream.")
    parser.add_argument("--requests", type=int, default=8000, help="requests per case at c=1 (c=16: twice)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds sharing the requests")
    parser.add_argument("--max-case-seconds", type=float, default=10.0, help="limit of a case in a round")
    parser.add_argument("--per-round", action="store_true", help="also print each round's req/s at c=16")
    args = parser.parse_args()
    proxy_core, load_core, pinned = pin_cores()
    plan = Plan(
        requests={1: args.requests, 16: args.requests * 2},
        warmup={1: 100, 16: 400},
        rounds=max(1, args.rounds),
        max_case_seconds=args.max_case_seconds,
        proxy_core=proxy_core,
        load_core=load_core,
    )
    started = time.monotonic()
    with Fleet() as fleet:
        upstream = fleet.start("upstream", "bench.upstream", [], load_core)
        fleet.wait_listening(upstream)
        base = f"http://127.0.0.1:{upstream.port}/v1"
        bare = fleet.start("bare", "bench.passthrough", ["--upstream", base], proxy_core)
        variants = {
            name: fleet.start(
                name, "bench.fluido_server", ["--upstream", base, "--features", features], proxy_core
            )
            for name, features in FEATURES.items()
        }
        for child in (bare, *variants.values()):
            fleet.wait_listening(child)
        servers = {
            "direct": Server(upstream.port, MODEL, None),
            "bare": Server(bare.port, MODEL, bare),
            **{name: Server(child.port, ALIAS, child) for name, child in variants.items()},
        }
        try:
            results = uvloop.run(run_all(servers, upstream, plan))
        except Exception:
            for child in fleet.children:
                print(f"--- {child.name} log ({child.log}):\n{child.log_tail()}", file=sys.stderr)
            raise
        failed = [
            c
            for c in (bare, *variants.values())
            if any(r.errors for k, r in results.items() if k[2] == c.name)
        ]
        for child in failed:
            print(f"--- {child.name} log ({child.log}):\n{child.log_tail(10)}", file=sys.stderr)
    report(results, plan, pinned, time.monotonic() - started, args.per_round)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        sys.exit(130)
