"""The overhead benchmark's records and its printed report: every case's figures, then bare, routing only
and full chain side by side with their ratios to bare, memory and start-up, and the cache hit."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.procs import Child
from bench.upstream import TOKENS

Key = tuple[int, str, str]  # (concurrency, mode, target)
Added = Callable[..., float]  # (mode, target, quantile, ttft=False) -> ms over direct
PROXIES = ("bare", "routing", "full")
# The goals of the full chain (routing only: CPU ratios <= 1.1), printed next to the figures.
GOALS = {"cpu_json": 1.25, "cpu_stream": 1.3, "cpu_routing": 1.1, "added_p50": 0.6, "added_p99": 1.5,
         "hit_p50": 0.3, "hit_p99": 0.6, "rss": 150.0, "rss_semantic": 600.0, "startup": 3.0}  # fmt: skip


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
    key: str  # the API key to send, if any
    proxy: Child | None  # the process whose CPU is measured; None when talking to the upstream directly


@dataclass(frozen=True)
class Startup:
    seconds: float  # spawn to first answer
    rss_mb: float  # right after the first answer
    rss_after_mb: float = float("nan")  # after the load (semantic: once its model has loaded)


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

    @property
    def cpu_us(self) -> float:
        return self.proxy_cpu / self.count * 1e6 if self.count else float("nan")


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
    def rps(self) -> float:
        # The median round: one round disturbed by another process on the machine does not move it.
        return median([r.rps for r in self.rounds if r.count])

    @property
    def cpu_us(self) -> float:
        return median([r.cpu_us for r in self.rounds if r.count])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile_ms(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def paired_ratio(results: dict[Key, Result], key: Key, base: Key) -> tuple[float, float, float]:
    """CPU per request of ``key`` over ``base``, round by round (they ran back to back): median, min, max."""
    ratios = [
        r.cpu_us / b.cpu_us
        for r, b in zip(results[key].rounds, results[base].rounds, strict=True)
        if r.count and b.count
    ]
    return (median(ratios), min(ratios), max(ratios)) if ratios else (float("nan"),) * 3


def report(results: dict[Key, Result], startups: dict[str, Startup], plan: Plan, pinned: str,
           elapsed: float, per_round: bool) -> None:  # fmt: skip
    print("Fluido overhead benchmark (127.0.0.1 only, zero-delay fake upstream)")
    print(f"  proxies: one uvicorn worker each, uvloop + httptools; {pinned}")
    print(f"  stream: role chunk, {len(TOKENS)} content chunks, finish, usage, [DONE]: one write each")
    print(f"  requests per case: {plan.requests[1]} at c=1, {plan.requests[16]} at c=16, after warm-up, in "
          f"{plan.rounds} interleaved rounds; run took {elapsed:.0f} s")  # fmt: skip
    print()
    _cases(results)
    _noise(results)
    print()
    _summary(results, startups)
    if per_round:
        print()
        print("CPU per request per round (µs, c=16):")
        for key, r in results.items():
            if key[0] == 16 and key[2] != "direct":
                print(f"  {key[2]:<8}{key[1]:<7}" + " ".join(f"{x.cpu_us:7.0f}" for x in r.rounds))


def _cases(results: dict[Key, Result]) -> None:
    header = (
        f"{'target':<8}{'reply':<7}{'c':>3}{'reqs':>7}{'err':>4}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'ttft50':>8}{'ttft99':>8}{'cpu µs/req':>11}{'rounds min-max':>16}"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for key, r in results.items():
        concurrency, mode, target = key
        if previous is not None and previous != (concurrency, mode):
            print()
        previous = (concurrency, mode)
        cpus = [x.cpu_us for x in r.rounds if x.count]
        spread = f"{min(cpus):.0f}-{max(cpus):.0f}" if cpus and target != "direct" else "-"
        print(
            f"{target:<8}{mode:<7}{concurrency:>3}{r.count:>7}{r.errors:>4}{r.rps:>8.0f}"
            f"{fmt(percentile_ms(r.latency, 0.5)):>8}{fmt(percentile_ms(r.latency, 0.99)):>8}"
            f"{fmt(percentile_ms(r.ttft, 0.5)):>8}{fmt(percentile_ms(r.ttft, 0.99)):>8}"
            f"{fmt(float('nan') if target == 'direct' else r.cpu_us, 0):>11}{spread:>16}"
        )
    print()
    print("p50/p99: whole reply (streams: through [DONE]); ttft: to the first data frame carrying content.")
    print("req/s and cpu: median of the rounds; cpu: the proxy process's CPU time per request (all threads).")


def _noise(results: dict[Key, Result]) -> None:
    """How much of the proxy's core something else took: the figures are only as good as this is small."""
    rounds = [r for key, res in results.items() if key[2] != "direct" for r in res.rounds]
    wall = sum(r.wall for r in rounds)
    if not wall:
        return
    other = sum(r.core0_other for r in rounds) / wall * 100
    steal = sum(r.core0_steal for r in rounds) / wall * 100
    load = sum(r.core1_other for r in rounds) / wall * 100
    note = "quiet" if max(other + steal, load) < 5 else "BUSY: other work competed, latencies are noisier"
    print(f"Other processes during the proxy cases: {other:.1f}% of core 0 (+{steal:.1f}% stolen by the "
          f"hypervisor), {load:.1f}% of core 1 ({note})")  # fmt: skip


def _summary(results: dict[Key, Result], startups: dict[str, Startup]) -> None:
    def added(mode: str, target: str, q: float, ttft: bool = False) -> float:
        r, d = results[(1, mode, target)], results[(1, mode, "direct")]
        mine, theirs = (r.ttft, d.ttft) if ttft else (r.latency, d.latency)
        return percentile_ms(mine, q) - percentile_ms(theirs, q)

    def ratio(mode: str, target: str) -> str:
        mid, low, high = paired_ratio(results, (16, mode, target), (16, mode, "bare"))
        return f"{mid:.2f}x ({low:.2f}-{high:.2f})"

    rows: list[tuple[str, list[str]]] = [
        ("added p50, c=1, non-stream (ms)", [f"{added('json', t, 0.5):+.3f}" for t in PROXIES]),
        ("added p99, c=1, non-stream (ms)", [f"{added('json', t, 0.99):+.3f}" for t in PROXIES]),
        ("added p50 to first token, c=1 (ms)", [f"{added('stream', t, 0.5, True):+.3f}" for t in PROXIES]),
        ("added p99 to first token, c=1 (ms)", [f"{added('stream', t, 0.99, True):+.3f}" for t in PROXIES]),
        ("req/s, c=16, non-stream", [f"{results[(16, 'json', t)].rps:.0f}" for t in PROXIES]),
        ("streams/s, c=16", [f"{results[(16, 'stream', t)].rps:.0f}" for t in PROXIES]),
        ("CPU per request, c=16 (µs)", [f"{results[(16, 'json', t)].cpu_us:.0f}" for t in PROXIES]),
        ("CPU per 32-token stream, c=16 (µs)", [f"{results[(16, 'stream', t)].cpu_us:.0f}" for t in PROXIES]),
        ("  ratio to bare, request", ["1"] + [ratio("json", t) for t in PROXIES[1:]]),
        ("  ratio to bare, stream", ["1"] + [ratio("stream", t) for t in PROXIES[1:]]),
        ("RSS after start (MB)", [f"{startups[t].rss_mb:.0f}" for t in PROXIES]),
        ("RSS after the load (MB)", [f"{startups[t].rss_after_mb:.0f}" for t in PROXIES]),
        ("start-up to first answer (s)", [f"{startups[t].seconds:.2f}" for t in PROXIES]),
    ]
    print(f"{'':<38}{'bare':>14}{'routing only':>20}{'full chain':>20}")
    for label, values in rows:
        print(f"{label:<38}" + "".join(f"{v:>{w}}" for v, w in zip(values, (14, 20, 20), strict=True)))
    print("Ratios: the median over rounds of the CPU per request against bare's in the same round (min-max).")
    if (semantic := startups.get("full+semantic")) is not None:
        print(f"Full chain with the semantic cache: RSS {semantic.rss_mb:.0f} MB at the first answer, "
              f"{semantic.rss_after_mb:.0f} MB with its embedding model loaded; first answer after "
              f"{semantic.seconds:.2f} s")  # fmt: skip
    print()
    hit_json, hit_stream = results[(1, "json", "hit")], results[(1, "stream", "hit")]
    print("Cache hit from memory, full chain, c=1, end to end (ms): "
          f"non-stream p50 {fmt(percentile_ms(hit_json.latency, 0.5))} p99 "
          f"{fmt(percentile_ms(hit_json.latency, 0.99))}; stream first token p50 "
          f"{fmt(percentile_ms(hit_stream.ttft, 0.5))} p99 {fmt(percentile_ms(hit_stream.ttft, 0.99))}, "
          f"whole p50 {fmt(percentile_ms(hit_stream.latency, 0.5))}")  # fmt: skip
    print(f"  CPU per hit: {hit_json.cpu_us:.0f} µs non-stream, {hit_stream.cpu_us:.0f} µs stream")
    print()
    _goals(results, startups, added)


def _goals(results: dict[Key, Result], startups: dict[str, Startup], added: Added) -> None:
    g = GOALS
    hit = results[(1, "json", "hit")]
    hit_p50, hit_p99 = percentile_ms(hit.latency, 0.5), percentile_ms(hit.latency, 0.99)
    checks = [
        (f"full CPU/request <= {g['cpu_json']}x bare",
         paired_ratio(results, (16, "json", "full"), (16, "json", "bare"))[0] <= g["cpu_json"]),
        (f"full CPU/stream <= {g['cpu_stream']}x bare",
         paired_ratio(results, (16, "stream", "full"), (16, "stream", "bare"))[0] <= g["cpu_stream"]),
        (f"routing CPU/request and /stream <= {g['cpu_routing']}x bare",
         max(paired_ratio(results, (16, m, "routing"), (16, m, "bare"))[0] for m in ("json", "stream"))
         <= g["cpu_routing"]),
        (f"full added p50 <= {g['added_p50']} ms (non-stream, first token)",
         max(added("json", "full", 0.5), added("stream", "full", 0.5, True)) <= g["added_p50"]),
        (f"full added p99 <= {g['added_p99']} ms (non-stream, first token)",
         max(added("json", "full", 0.99), added("stream", "full", 0.99, True)) <= g["added_p99"]),
        (f"cache hit p50 <= {g['hit_p50']} ms (non-stream, end to end)", hit_p50 <= g["hit_p50"]),
        (f"cache hit p99 <= {g['hit_p99']} ms (non-stream, end to end)", hit_p99 <= g["hit_p99"]),
        (f"RSS after start <= {g['rss']:.0f} MB (no embedding model)", startups["full"].rss_mb <= g["rss"]),
        (f"start-up to first answer <= {g['startup']:.0f} s", startups["full"].seconds <= g["startup"]),
    ]  # fmt: skip
    if (semantic := startups.get("full+semantic")) is not None:
        checks.append((f"RSS with the embedding model <= {g['rss_semantic']:.0f} MB",
                       semantic.rss_after_mb <= g["rss_semantic"]))  # fmt: skip
    print("Goals (for information; a benchmark never fails):")
    for label, ok in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {label}")
