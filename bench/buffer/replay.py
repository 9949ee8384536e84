"""The benchmark's load cells replayed on a fake clock (``bench.buffer.simulate``): its arrivals, classes
and prompts, each request holding one of the capacity fake's slots as long as the fake would keep it, on
the real ``Gate`` with L fixed at the fake's slots; the event loop's part (``Admission``: expiry at the
earliest deadline, rechecks while a reservation is kept for arrivals) replayed as events."""

from __future__ import annotations

import copy
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from bench.buffer.scenarios import (
    ITL_MS,
    PREFILL_MS,
    PREFILL_MS_PER_WORD,
    SLOTS,
    TOKENS,
    bodies,
    capacity_rps,
)
from bench.load.schedule import arrivals
from bench.load.stats import percentile
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import DONE, EXPIRED, STARTED, Entry, Gate, Shed

RECHECK = 0.5  # middleware.buffer.admission's


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    cls: str
    prefill: float  # seconds to the first token once started
    hold: float  # seconds it holds its slot


def requests(
    load: float, seconds: float, seed: int, body_seed: int, jitter: float, overhead: float
) -> list[Request]:
    """The benchmark's arrivals at ``load`` times the fake's capacity, with its bodies' classes and the
    fake's holding times for their prompts."""
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
    """Admitted anyway, on a copy of the run: "late" when it would not have started by its deadline;
    "in time, another expires" when a request admitted meanwhile expires that would not have; "in time,
    another shed" when the gate sheds in its place one it would have admitted (one refusal traded for
    another: the slot time was not there for both); "in time" otherwise (a false refusal: nobody else
    was worse off). The others are compared over the arrivals that could share the queue with it (up to
    twice the longest budget after it), each run on until they are all settled."""
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
    longest = max(run.budgets.values())
    cutoff = run.now + 2 * longest
    base.until(cutoff + longest + 0.01)
    forced.until(cutoff + longest + 0.01)
    if e.state not in (STARTED, DONE) or e.started_at > e.deadline:
        return "late"

    def lost(x: Run, expired: bool) -> set[int]:
        if expired:
            return {k for k, v in x.entries.items() if k != i and v.state == EXPIRED}
        return {k for k in x.shed if run.now < x.reqs[k].at <= cutoff}

    if lost(forced, True) - lost(base, True):
        return "in time, another expires"
    if len(lost(forced, False)) > len(lost(base, False)):
        return "in time, another shed"
    return "in time"
