"""Fluido's overhead: latency, throughput, CPU and memory against a zero-delay upstream, next to a direct
connection and a bare pass-through proxy. ``python -m bench.overhead`` (``make bench``), 1-3 minutes;
``--long`` for five times the requests.

Targets, each its own process:
- ``direct``: the fake upstream itself, the reference that "added" latency is measured from;
- ``bare``: a 70-line Starlette + aiohttp pass-through (``bench.passthrough``), the floor of a Python proxy;
- ``routing``: Fluido with nothing on but routing;
- ``full``: Fluido with ``config.toml``'s chain plus an API key and limits (``bench.fluido_server``):
  key check, rate limits, query classifier, compaction, response cache (every request a new prompt, so
  every request is a miss and is stored), adaptive buffer, access log and metrics.
Cache hits from memory are measured apart, on ``full`` with one repeated prompt.

The proxy under test is pinned alone to one core, the upstream and the load generator to the other.
Requests are deterministic (temperature 0) 32-token chats; a stream is one SSE event per upstream write.
It prints figures and never fails on a time: the targets are printed next to them, for information.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import sys
import time
from collections.abc import Iterator

import orjson
import uvloop

from bench.fluido_server import ALIAS, BENCH_KEY
from bench.loadgen import chat_request, connect, run_load
from bench.overhead_report import PROXIES, Key, Plan, Result, Round, Server, Startup, report
from bench.procs import Child, Fleet, core_seconds, cpu_seconds, rss_mb
from bench.upstream import MODEL

TARGETS = ("direct", *PROXIES)
MODES = ("json", "stream")
CONCURRENCY = (1, 16)
HIT = "hit"  # full chain, one repeated prompt: answered from the memory cache


def cases() -> Iterator[Key]:
    # Every target runs back to back in every round, so what they are compared on is measured close in time.
    for concurrency in CONCURRENCY:
        for mode in MODES:
            for target in (*TARGETS, HIT) if concurrency == 1 else TARGETS:
                yield concurrency, mode, target


async def run_case(server: Server, upstream: Child, key: Key, count: int, warmup: int, plan: Plan,
                   result: Result) -> None:  # fmt: skip
    concurrency, mode, target = key
    stream = mode == "stream"
    raw = chat_request(server.model, stream, key=server.key, unique=target != HIT)
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
            warmup = plan.warmup[concurrency] * (3 if rnd == 0 else 1)  # the first round also fills caches
            count = plan.requests[concurrency] // plan.rounds
            server = servers["full" if target == HIT else target]
            await run_case(server, upstream, key, count, warmup, plan, results[key])
    return results


def first_answer(port: int, model: str, key: str, timeout: float = 60.0) -> None:
    """Ask until the server answers a chat request with 200 (or fail after ``timeout``)."""
    question = {"role": "user", "content": "start"}
    body = orjson.dumps({"model": model, "messages": [question], "temperature": 0})
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer on port {port} within {timeout:g}s")
        time.sleep(0.01)


def start_proxy(fleet: Fleet, name: str, module: str, args: list[str], core: int | None, model: str,
                key: str) -> tuple[Child, Startup]:  # fmt: skip
    """Start one proxy and time it from spawn to its first answer (a warm install: imports are cached)."""
    started = time.monotonic()
    child = fleet.start(name, module, args, core)
    try:
        first_answer(child.port, model, key)
    except RuntimeError:
        print(f"--- {name} log:\n{child.log_tail()}", file=sys.stderr)
        raise
    return child, Startup(time.monotonic() - started, rss_mb(child.pid))


def semantic_rss(fleet: Fleet, base: str, core: int | None) -> Startup | None:
    """The full chain with the semantic cache on: RSS once its embedding model has loaded."""
    child, startup = start_proxy(fleet, "semantic", "bench.fluido_server",
                                 ["--upstream", base, "--features", "full", "--semantic"], core, ALIAS,
                                 BENCH_KEY)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        log = child.log.read_text(errors="replace")
        if "semantic_cache_ready" in log:
            return Startup(startup.seconds, startup.rss_mb, rss_mb(child.pid))
        if "semantic_cache_unavailable" in log:
            print(f"semantic cache failed to start:\n{child.log_tail(5)}", file=sys.stderr)
            return None
        time.sleep(0.2)
    return None


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
    parser.add_argument("--requests", type=int, default=1600, help="requests per case at c=1 (c=16: twice)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds sharing the requests")
    parser.add_argument("--long", action="store_true", help="five times the requests and twice the rounds")
    parser.add_argument("--max-case-seconds", type=float, default=10.0, help="limit of a case in a round")
    parser.add_argument("--per-round", action="store_true", help="also print each round's CPU per request")
    parser.add_argument("--semantic", action="store_true",
                        help="also start the full chain with the semantic cache, for its RSS")  # fmt: skip
    args = parser.parse_args()
    scale, rounds = (5, args.rounds * 2) if args.long else (1, args.rounds)
    proxy_core, load_core, pinned = pin_cores()
    plan = Plan(
        requests={1: args.requests * scale, 16: args.requests * 2 * scale},
        warmup={1: 50, 16: 200},
        rounds=max(1, rounds),
        max_case_seconds=args.max_case_seconds * scale,
        proxy_core=proxy_core,
        load_core=load_core,
    )
    started = time.monotonic()
    with Fleet() as fleet:
        upstream = fleet.start("upstream", "bench.upstream", [], load_core)
        fleet.wait_listening(upstream)
        base = f"http://127.0.0.1:{upstream.port}/v1"
        starts = {
            "bare": ("bench.passthrough", ["--upstream", base], MODEL, ""),
            "routing": ("bench.fluido_server", ["--upstream", base, "--features", "routing"], ALIAS, ""),
            "full": ("bench.fluido_server", ["--upstream", base, "--features", "full"], ALIAS, BENCH_KEY),
        }
        servers = {"direct": Server(upstream.port, MODEL, "", None)}
        startups: dict[str, Startup] = {}
        # One at a time, so each start-up is timed without the others competing for the core.
        for name, (module, extra, model, key) in starts.items():
            child, startups[name] = start_proxy(fleet, name, module, extra, proxy_core, model, key)
            servers[name] = Server(child.port, model, key, child)
        try:
            results = uvloop.run(run_all(servers, upstream, plan))
        except Exception:
            for child in fleet.children:
                print(f"--- {child.name} log ({child.log}):\n{child.log_tail()}", file=sys.stderr)
            raise
        for name in PROXIES:
            proxy = servers[name].proxy
            assert proxy is not None
            startups[name] = Startup(startups[name].seconds, startups[name].rss_mb, rss_mb(proxy.pid))
            if any(r.errors for k, r in results.items() if k[2] == name):
                print(f"--- {name} log ({proxy.log}):\n{proxy.log_tail(10)}", file=sys.stderr)
        if args.semantic and (found := semantic_rss(fleet, base, proxy_core)) is not None:
            startups["full+semantic"] = found
    report(results, startups, plan, pinned, time.monotonic() - started, args.per_round)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        sys.exit(130)
