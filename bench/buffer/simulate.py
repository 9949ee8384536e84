"""``python -m bench.buffer.simulate``: the load cells of ``bench.buffer`` replayed on a fake clock, many
runs in seconds, to see what the admission rules shed and why.

The arrivals, classes and prompts are the benchmark's (``fluido bench``'s seeded Poisson schedule, the same
bodies); each request holds one of the 4 slots as long as the capacity fake would keep it (prefill, then
its tokens), plus ``--overhead`` and, with ``--jitter``, a normal error of that share. The gate is the real
``Gate`` with L fixed at the fake's slots; the event loop's part (``Admission``: expiry at the earliest
deadline, rechecks while a reservation is kept for arrivals) is replayed as events. The budgets are the
benchmark's: short 0.6x and long 1.8x the TTFT p99 of its seeded arrivals without the buffer (or, with
``--own-reference``, of each run's own arrivals, which vary a lot from seed to seed). With ``--fifo``, first
come, first served with the long budget for all, as the benchmark's FCFS cell.

Each shed at arrival is judged in hindsight: admitted anyway (on a copy of the run), would it have started
before its deadline, and at whose cost (another request expiring, or shed in its place)? And by what the
refusal hangs on (``cause``). ``--show`` prints each shed decision's inputs. The figures at the end are the
goals': the shed rate with its 95% interval (a 60 s cell at 0.5x sends about 240 requests: one shed is
0.4%, so a rate below 0.1% takes thousands of requests, many seeds, to tell), TTFT (queue wait and
prefill) per class, slot use, expiries, long requests served past their budget.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass

from bench.buffer.replay import Run, gate, hindsight, reference_p99, requests
from bench.buffer.scenarios import SLOTS
from bench.buffer.verdict import cause, describe
from bench.load.stats import percentile
from middleware.buffer.config import DEFAULT_RESERVE
from middleware.buffer.queue import DONE, EXPIRED, Shed

ARRIVAL_SEED, BODY_SEED = 7, 3  # the benchmark's (``open_loop``, ``bodies``)
# The benchmark's reference TTFT p99 (0.5x, buffer off) on its seeded arrivals, which sets its budgets. A
# run's own reference varies a lot from seed to seed (0.25 to 1.7 s over 60 s), so its budgets would too.
BENCH_REFERENCE = 0.992


@dataclass
class Outcome:
    sent: int
    shed: list[tuple[int, str, float, str]]  # (request, class, time, hindsight)
    expired: int
    budgets: dict[str, float]
    ttfts: dict[str, list[float]]  # per class, of the served: queue wait + prefill
    slot_use: float  # share of the slot time busy during the arrivals
    long_late: int  # long requests that started past their budget


@dataclass(frozen=True)
class Options:
    load: float = 0.5
    seconds: float = 60.0
    jitter: float = 0.0
    overhead: float = 0.002
    reserve: bool = True
    judge: bool = True
    show: bool = False
    own_reference: bool = False
    fifo: bool = False


def simulate(o: Options, seed: int, body_seed: int) -> Outcome:
    reqs = requests(o.load, o.seconds, seed, body_seed, o.jitter, o.overhead)
    ref = reference_p99(reqs) if o.own_reference else BENCH_REFERENCE
    budgets = {"short": round(ref * 0.6, 3), "long": round(ref * 1.8, 3)}
    if o.fifo:  # one common budget, the long one, as the benchmark's FCFS cell
        budgets = {"short": budgets["long"], "long": budgets["long"]}
    shed: list[tuple[int, str, float, str]] = []

    def on_shed(run: Run, i: int, why: Shed) -> None:
        cls = run.reqs[i].cls
        verdict = hindsight(run, i) if o.judge else "?"
        verdict += "; " + cause(run.gate, cls, run.budgets[cls], run.now).split(" (")[0]
        shed.append((i, cls, run.now, verdict))
        if o.show:
            print(
                f"  shed #{i} {describe(run.gate, cls, run.budgets[cls], run.now)}; in hindsight: {verdict}"
            )

    run = Run(gate(dict(DEFAULT_RESERVE) if o.reserve else {}, o.fifo), reqs, budgets, on_shed=on_shed)
    for i, r in enumerate(reqs):
        run.push(r.at, "arrive", i)
    while run.step():
        pass
    expired = sum(1 for e in run.entries.values() if e.state == EXPIRED)
    served = [(reqs[i], e) for i, e in run.entries.items() if e.state == DONE]
    ttfts: dict[str, list[float]] = {"short": [], "long": []}
    busy = 0.0
    for r, e in served:
        ttfts[r.cls].append(e.started_at - r.at + r.prefill)
        busy += max(0.0, min(e.started_at + r.hold, o.seconds) - min(e.started_at, o.seconds))
    late = sum(1 for r, e in served if r.cls == "long" and e.started_at - r.at > budgets["long"])
    return Outcome(len(reqs), shed, expired, budgets, ttfts, busy / (SLOTS * o.seconds), late)


def interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval for a rate of ``k`` in ``n`` (sound near 0, where the normal one is not)."""
    if n == 0:
        return 0.0, 1.0
    p, zz = k / n, z * z / n
    mid, half = (p + zz / 2) / (1 + zz), z * math.sqrt(p * (1 - p) / n + zz / (4 * n)) / (1 + zz)
    return max(0.0, mid - half), min(1.0, mid + half)


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.buffer.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--load", type=float, default=0.5, help="times the fake's capacity (default 0.5)")
    add("--seconds", type=float, default=60.0)
    add("--seeds", default=str(ARRIVAL_SEED), help="arrival seeds, N or N-M (default 7, the benchmark's)")
    add("--body-seed", type=int, default=BODY_SEED, help="the bodies' seed (default 3); -1: the arrival seed")
    add("--jitter", type=float, default=0.0, help="holding time error, a share (0.03)")
    add("--overhead", type=float, default=0.002, help="seconds added to each hold")
    add("--no-reserve", action="store_true", help="without the default reserves")
    add("--no-judge", action="store_true", help="skip the hindsight check (faster)")
    add("--own-reference", action="store_true", help="budgets from each run's own reference")
    add("--fifo", action="store_true", help="first come, first served, one budget")
    add("--show", action="store_true", help="print each shed decision's inputs")
    a = parser.parse_args()
    o = Options(a.load, a.seconds, a.jitter, a.overhead, not a.no_reserve, not a.no_judge, a.show,
                a.own_reference, a.fifo)  # fmt: skip
    sent = shed = expired = late = 0
    verdicts: Counter[str] = Counter()
    ttfts: dict[str, list[float]] = {"short": [], "long": []}
    use: list[float] = []
    for seed in seeds(a.seeds):
        out = simulate(o, seed, seed if a.body_seed < 0 else a.body_seed)
        sent, shed, expired = sent + out.sent, shed + len(out.shed), expired + out.expired
        late += out.long_late
        use.append(out.slot_use)
        for cls, got in out.ttfts.items():
            ttfts[cls].extend(got)
        verdicts.update(verdict for *_, verdict in out.shed)
        sheds = [(i, c[0], round(t, 2), v) for i, c, t, v in out.shed]
        print(f"seed {seed}: {len(out.shed)} of {out.sent} shed {sheds}; {out.expired} expired", flush=True)
    low, high = interval(shed, sent)
    print(f"budgets {out.budgets}; {shed} of {sent} shed ({shed / max(sent, 1):.3%}, 95% interval"
          f" {low:.3%} to {high:.3%}); {expired} expired")  # fmt: skip
    if not a.no_judge:
        judged = Counter(v.split("; ")[0] for v in verdicts.elements())
        shares = ", ".join(f"{v} {n} ({n / max(shed, 1):.0%})" for v, n in sorted(judged.items()))
        print(f"  sheds in hindsight: {shares or 'none'}")
    print(f"  sheds in hindsight; by what the refusal hung on: {dict(verdicts)}")
    both = ttfts["short"] + ttfts["long"]
    short, long_ = ttfts["short"], ttfts["long"]
    figures = [percentile(both, 50), percentile(both, 99), percentile(short, 50), percentile(short, 99)]
    figures.append(percentile(long_, 99))
    admitted = sum(map(len, ttfts.values())) + expired
    print(
        "  TTFT ms p50 / p99 / short p50 / short p99 / long p99: "
        + " / ".join("-" if v is None else f"{v * 1000:.0f}" for v in figures)
        + f"; slot use {min(use):.1%} to {max(use):.1%}; expired {expired / max(admitted, 1):.2%} of"
        f" admitted; long served past their budget {late}"
    )


if __name__ == "__main__":
    main()
