"""``python -m bench.buffer.simulate``: the load cells of ``bench.buffer`` replayed on a fake clock, many
runs in seconds, to see what the admission rules shed and why.

The arrivals, classes and prompts are the benchmark's (``fluido bench``'s seeded Poisson schedule, the same
bodies); each request holds one of the 4 slots as long as the capacity fake would keep it (prefill, then
its tokens), plus ``--overhead`` and, with ``--jitter``, a normal error of that share. The gate is the real
``Gate`` with L fixed at the fake's slots; the event loop's part (``Admission``: expiry at the earliest
deadline, rechecks while a reservation is kept for arrivals) is replayed as events. The budgets come from
XX
buffer (short 0.6x, long 1.8x).

Each shed at arrival is judged in hindsight: admitted anyway (on a copy of the run), would it have started
before its deadline without making another request miss its own? ``--show`` prints the decision's inputs
for each shed.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from bench.buffer.scenarios import ITL_MS, PREFILL_MS, PREFILL_MS_PER_WORD, SLOTS, TOKENS, bodies, capacity_rps
from bench.load.schedule import arrivals
from bench.load.stats import percentile
from middleware.buffer.config import DEFAULT_RESERVE
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import DONE, STARTED, Entry, Gate, Shed

ARRIVAL_SEED, BODY_SEED = 7, 3  # the benchmark's (``open_loop``, ``bodies``)
RECHECK = 0.5  # middleware.buffer.admission's
# The benchmark's reference TTFT p99 (0.5x, buffer off) on its seeded arrivals, which sets its budgets. A
# run's own reference varies a lot from seed to seed (0.25 to 1.7 s over 60 s), so its budgets would too.
BENCH_REFERENCE = 0.992


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    cls: str
    prefill: float  # seconds to the first token once started
    hold: float  # seconds it holds its slot


def requests(load: float, seconds: float, seed: int, body_seed: int, jitter: float,
             overhead: float) -> list[Request]:  # fmt: skip
    times = arrivals(load * capacity_rps(), seed, duration=seconds)
    load_bodies = bodies(count=len(times) + 1, seed=body_seed)
    rng = random.Random(seed * 1000 + body_seed)
    out = []
    for at, (cls, body) in zip(times, load_bodies, strict=False):
        words = len(orjson.loads(body)["messages"][0]["content"].split())
        prefill = (PREFILL_MS + PREFILL_MS_PER_WORD * words) / 1000
        hold = prefill + ITL_MS * (TOKENS[cls] - 1) / 1000 + overhead
        if jitter:
            hold *= max(0.5, rng.gauss(1.0, jitter))
        out.append(Request(at, cls, prefill, hold))
    return out


def reference_p99(reqs: list[Request]) -> float:
    """TTFT p99 of the requests sent straight to the 4 slots (first come, first served), no buffer."""
    frees = [0.0] * SLOTS
    ttfts = []
    for r in reqs:
        start = max(r.at, heapq.heappop(frees))
        heapq.heappush(frees, start + r.hold)
        ttfts.append(start - r.at + r.prefill)
    p99 = percentile(ttfts, 99)
    assert p99 is not None
    return p99


@dataclass
class Run:
    """A replay in progress: the gate, the pending events, and what happened to each request."""

    gate: Gate
    reqs: list[Request]
    budgets: dict[str, float]
    events: list[tuple[float, int, str, int]] = field(default_factory=list)  # (time, seq, kind, request)
    entries: dict[int, Entry] = field(default_factory=dict)
    shed: list[int] = field(default_factory=list)
    seq: int = 0
    recheck_at: float = float("inf")
    now: float = 0.0
    on_shed: Callable[[Run, int, Shed], None] = lambda run, i, shed: None

    def push(self, at: float, kind: str, i: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, i))

    def start(self, i: int) -> None:
        self.push(self.now + self.reqs[i].hold, "end", i)

    def step(self) -> bool:
        if not self.events:
            return False
        self.now, _, kind, i = heapq.heappop(self.events)
        g = self.gate
        if kind == "arrive":
            r = self.reqs[i]
            got = g.arrive(r.cls, self.budgets[r.cls], self.now)
            if isinstance(got, Shed):
                self.shed.append(i)
                self.on_shed(self, i, got)
            else:
                self.entries[i] = got
                got.waiter = i
                if got.state == STARTED:
                    self.start(i)
        elif kind == "end":
            g.finish(self.entries[i], self.now)
        elif kind == "expire":
            g.expire(self.now)
        elif kind == "recheck":
            if self.now != self.recheck_at:
                return True
            self.recheck_at = float("inf")
        while (started := g.pop_ready(self.now)) is not None:
            assert isinstance(started.waiter, int)
            self.start(started.waiter)
        if (deadline := g.next_deadline()) is not None:
            self.push(deadline, "expire")
        self.settle()
        return True

    def settle(self) -> None:
        g = self.gate
        if g.depth == 0 or g.in_flight >= g.limit:
            self.recheck_at = float("inf")
            return
        lent_in = g.reserve.lends_in(g.limit, self.now)
        if lent_in is not None:
            self.recheck_at = self.now + min(max(lent_in, 0.0) + 1e-3, RECHECK)
            self.push(self.recheck_at, "recheck")

    def until(self, t: float) -> None:
        while self.events and self.events[0][0] <= t and self.step():
            pass


def gate(reserve: dict[str, float], fifo: bool = False) -> Gate:
    settings = ControllerSettings(initial=SLOTS, adaptive=False)
    return Gate(Controller(settings), 64, {} if fifo else reserve, jitter=0.0, rng=lambda: 0.5, fifo=fifo)


def hindsight(run: Run, i: int) -> str:
    """Admitted anyway, on a copy of the run: "in time" when it starts before its deadline and no request
    admitted meanwhile expires that would not have; else why not."""
    base = copy.deepcopy(run)
    base.on_shed = lambda *_: None
    forced = copy.deepcopy(base)
    r, g = run.reqs[i], forced.gate
    g._seq += 1
    e = Entry(r.cls, run.now, run.now + run.budgets[r.cls], g._seq, run.now + run.budgets[r.cls])
    e.waiter = i
    heapq.heappush(g._heaps.setdefault(r.cls, []), e)
    g.waiting[r.cls] += 1
    forced.entries[i] = e
    forced.push(run.now, "recheck")
    forced.recheck_at = run.now
    horizon = run.now + max(run.budgets.values()) + 0.01
    base.until(horizon)
    forced.until(horizon)
    if e.state not in (STARTED, DONE) or e.started_at > e.deadline:
        return "late"
    expired = lambda x: sum(1 for k, v in x.entries.items() if k != i and v.state == "expired")  # noqa: E731
    return "in time" if expired(forced) <= expired(base) else "in time, another expires"


def cause(g: Gate, cls: str, budget: float, now: float) -> str:
    """What the refusal hangs on, after ``Judge._late``'s steps: "idle slot" (a slot is free now, kept by
    another class's reservation), "reserve" (the replay with the slots other classes keep lent would start
    it in time), "late" (the replay starts it past its deadline), "stretch" (the replay stretched for the
    quicker classes that pass it does), "push" (the arrivals expected to pass it do), "margin" (the replay
    starts it in time, within the forecast's margin), or "passes" (it would make a waiter it passes late)."""
    e = Entry(cls, now, now + budget, g._seq + 1, now + budget)
    waiting = g._waiting()
    order = sorted([*waiting, e], key=lambda x: (x.key, x.seq))
    at, errors = order.index(e), list[float]()
    mine = g._starts(now, order, cls, errors)
    plain = g.forecast.starts(now, g._running, max(g.limit - g.in_flight, 0), order)
    assert mine is not None and plain is not None
    start, lent, slots, f = mine[at], plain[at], g.limit, g.forecast
    lane = None
    if lanes := g.reserve.slots(cls, g.limit):
        mine_ahead = [w for w in waiting[:at] if w.cls == cls]
        lane = f.lane_start(now, g._running, max(g.limit - g.in_flight, 0), cls, lanes, [*mine_ahead, e])
    stretched = start
    if (stretch := g._stretch(cls, now)) > 1.0:
        replayed = f.starts(now, g._running, g._free(cls, now), order)
        assert replayed is not None
        stretched = max(start, now + (replayed[at] - now) * stretch)
    pushed = f.with_arrivals(now, stretched, cls, e.deadline, g.budgets, slots)
    var = errors[at] ** 2 + f.push_variance(now, pushed, cls, e.deadline, g.budgets, slots)
    if lane is not None:
        pushed = min(pushed, lane)
    margin = g.margin(e, var**0.5 if at == len(waiting) else float("inf"))
    late = e.deadline - margin
    d = e.deadline
    figures = (f"start {start - d:+.3f}s, stretched {stretched - d:+.3f}s, pushed {pushed - d:+.3f}s,"
               f" lane {'-' if lane is None else f'{lane - d:+.3f}s'}, margin {margin:.3f}s,"
               f" lent {lent - d:+.3f}s")  # fmt: skip
    if g.limit > g.in_flight:
        return f"idle slot ({figures})"
    if min(start, lane or start) > late and lent <= late:
        return f"reserve ({figures})"
    if min(start, lane or start) > d:
        return f"late ({figures})"
    if min(start, lane or start) > late:
        return f"margin ({figures})"
    if min(stretched, lane or stretched) > late:
        return f"stretch ({figures})"
    if pushed > late:
        return f"push ({figures})"
    return f"passes ({figures})"


def describe(run: Run, i: int, shed: Shed) -> str:
    g, r, now = run.gate, run.reqs[i], run.now
    running = sorted((e.cls[0], round(now - e.started_at, 3)) for e in g._running)
    waiting = [(e.cls[0], round(e.deadline - now, 3)) for e in g._waiting()]
    held = g.reserve.held(r.cls, g.limit, now)
    spreads = {c: round(s, 3) for c, s in g.forecast.spreads.items()}
    rates = {c: round(g.forecast.rate(c, now), 2) for c in g.budgets}
    return (f"  shed #{i} {r.cls} at {now:.3f}s ({shed.reason}); free {g.limit - g.in_flight}, held from it"
            f" {held}; running (class, s) {running}; waiting (class, slack s) {waiting}; means"
            f" { {c: round(v, 3) for c, v in g.forecast.by_class.items()} }, spreads {spreads}, rates {rates};"
            f" {cause(run.gate, run.reqs[i].cls, run.budgets[run.reqs[i].cls], run.now)}")  # fmt: skip


@dataclass
class Outcome:
    sent: int
    shed: list[tuple[int, str, float, str]]  # (request, class, time, hindsight)
    expired: int
    budgets: dict[str, float]
    ttfts: dict[str, list[float]]  # per class, of the served: queue wait + prefill
    slot_use: float  # share of the slot time busy during the arrivals
    long_late: int  # long requests that started past their budget


def simulate(load: float, seconds: float, seed: int, body_seed: int, jitter: float, overhead: float,
             reserve: dict[str, float], judge: bool = True, show: bool = False,
             own_reference: bool = False, fifo: bool = False) -> Outcome:  # fmt: skip
    reqs = requests(load, seconds, seed, body_seed, jitter, overhead)
    ref = reference_p99(reqs) if own_reference else BENCH_REFERENCE
    budgets = {"short": round(ref * 0.6, 3), "long": round(ref * 1.8, 3)}
    if fifo:  # one common budget, the long one, as the benchmark's FCFS cell
        budgets = {"short": budgets["long"], "long": budgets["long"]}
    shed: list[tuple[int, str, float, str]] = []

    def on_shed(run: Run, i: int, why: Shed) -> None:
        verdict = hindsight(run, i) if judge else "?"
        verdict += "; " + cause(run.gate, run.reqs[i].cls, run.budgets[run.reqs[i].cls], run.now).split(" (")[0]
        shed.append((i, run.reqs[i].cls, run.now, verdict))
        if show:
            print(describe(run, i, why) + f"; in hindsight: {verdict}")

    run = Run(gate(reserve, fifo), reqs, budgets, on_shed=on_shed)
    for i, r in enumerate(reqs):
        run.push(r.at, "arrive", i)
    while run.step():
        pass
    expired = sum(1 for e in run.entries.values() if e.state == "expired")
    served = [(reqs[i], e) for i, e in run.entries.items() if e.state == DONE]
    ttfts: dict[str, list[float]] = {"short": [], "long": []}
    busy = 0.0
    for r, e in served:
        ttfts[r.cls].append(e.started_at - r.at + r.prefill)
        busy += max(0.0, min(e.started_at + r.hold, seconds) - min(e.started_at, seconds))
    late = sum(1 for r, e in served if r.cls == "long" and e.started_at - r.at > budgets["long"])
    return Outcome(len(reqs), shed, expired, budgets, ttfts, busy / (SLOTS * seconds), late)


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer.simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--load", type=float, default=0.5, help="times the fake's capacity (default 0.5)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", default=str(ARRIVAL_SEED), help="arrival seeds, N or N-M (default 7)")
    parser.add_argument("--body-seed", type=int, default=BODY_SEED, help="-1: the arrival seed")
    parser.add_argument("--jitter", type=float, default=0.0, help="holding time error, a share (0.03)")
    parser.add_argument("--overhead", type=float, default=0.002, help="seconds added to each hold")
    parser.add_argument("--no-reserve", action="store_true", help="without the default reserves")
    parser.add_argument("--no-judge", action="store_true", help="skip the hindsight check (faster)")
    parser.add_argument("--own-reference", action="store_true",
                        help="budgets from each run's own reference, not the benchmark's")
    parser.add_argument("--fifo", action="store_true", help="first come, first served, one budget")
    parser.add_argument("--show", action="store_true", help="print each shed decision's inputs")
    args = parser.parse_args()
    reserve = {} if args.no_reserve else dict(DEFAULT_RESERVE)
    sent = shed = expired = late = 0
    verdicts: dict[str, int] = {}
    ttfts: dict[str, list[float]] = {"short": [], "long": []}
    use: list[float] = []
    for seed in seeds(args.seeds):
        body_seed = seed if args.body_seed < 0 else args.body_seed
        out = simulate(args.load, args.seconds, seed, body_seed, args.jitter, args.overhead, reserve,
                       not args.no_judge, args.show, args.own_reference, args.fifo)  # fmt: skip
        sent, shed, expired = sent + out.sent, shed + len(out.shed), expired + out.expired
        late += out.long_late
        use.append(out.slot_use)
        for cls, got in out.ttfts.items():
            ttfts[cls].extend(got)
        for *_, verdict in out.shed:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        print(f"seed {seed}: budgets {out.budgets}; {len(out.shed)} of {out.sent} shed"
              f" {[(i, c[0], round(t, 2), v) for i, c, t, v in out.shed]}; {out.expired} expired", flush=True)  # fmt: skip
    print(f"all: {shed} of {sent} shed ({shed / max(sent, 1):.3%}); {expired} expired; in hindsight {verdicts}")
    both = ttfts["short"] + ttfts["long"]
    figures = [percentile(both, 50), percentile(both, 99), percentile(ttfts["short"], 50),
               percentile(ttfts["short"], 99), percentile(ttfts["long"], 99)]  # fmt: skip
    admitted = sum(map(len, ttfts.values())) + expired
    print("TTFT ms p50 / p99 / short p50 / short p99 / long p99: "
          + " / ".join("-" if v is None else f"{v * 1000:.0f}" for v in figures)
          + f"; slot use {min(use):.1%} to {max(use):.1%}; expired {expired / max(admitted, 1):.2%} of admitted;"
          f" long served past their budget {late}")  # fmt: skip


if __name__ == "__main__":
    main()
