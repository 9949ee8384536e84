"""The admission queue of one upstream: at most L requests in flight, the rest waiting in deadline order.

- A request's deadline is its arrival plus its query class's TTFT budget. The queue serves the earliest
  deadline first (EDF): a short question passes a long essay that arrived before it, and a long request
  still reaches the head once its deadline is the earliest, so nothing starves.
- A class may hold a reserved share of L: slots the other classes may not take while that class has fewer
  running than its share, so a burst of long jobs cannot occupy every slot.
- On arrival, the predicted start comes from replaying the queue on the slots (``Forecast``: each class's
  mean holding time, the running requests' time already spent) and, under EDF, pushed back by the
  requests expected to arrive meanwhile with earlier deadlines (at their recent rates). A request that
  cannot start before its deadline, or whose going ahead would make a waiter it passes miss a deadline
  that waiter would have met, or that finds the queue at its bound, is shed at once with a Retry-After
  of the predicted drain time. So what is admitted is (as far as the prediction goes) served in time,
  and expiry stays the exception.
- A waiting request whose client leaves is removed; one still waiting at its deadline expires.

Pure: the caller passes ``now`` and applies what the queue decides (starting waiters, replying to the shed).
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from middleware.buffer.controller import Controller
from middleware.buffer.forecast import Forecast

QUEUED, STARTED, DONE, CANCELLED, EXPIRED = "queued", "started", "done", "cancelled", "expired"
RETRY_MIN, RETRY_MAX = 1.0, 60.0  # the range the OpenAI SDKs honour


@dataclass(slots=True, eq=False)
class Entry:
    """One request's place: waiting, running, or gone. ``waiter`` belongs to the async layer."""

    cls: str
    arrival: float
    deadline: float
    seq: int
    key: float = 0.0  # the queue's order: the deadline (EDF), or the arrival (first come, first served)
    state: str = QUEUED
    started_at: float = 0.0
    epoch: int = 0
    launch: float = 0.0  # seconds of its slot spent waiting for the upstream to start: not service time
    waiter: object = field(default=None, repr=False)
    lease: object = field(default=None, repr=False)  # the replicas' shared count's, when there is one

    def __lt__(self, other: Entry) -> bool:
        return (self.key, self.seq) < (other.key, other.seq)


_order = operator.attrgetter("key", "seq")  # an entry's place in the queue, as ``Entry.__lt__`` compares


@dataclass(frozen=True, slots=True)
class Shed:
    """A refusal: ``reason`` is queue_full, deadline_unreachable, expired or upstream_unavailable."""

    reason: str
    retry_after: float


class Gate:
    """In-flight count, reservations and the EDF queue of one upstream."""

    def __init__(
        self,
        controller: Controller,
        bound: int,
        reserve: Mapping[str, float] | None = None,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
        fifo: bool = False,
        shared: bool = False,
    ) -> None:
        self.controller = controller
        self.bound = bound
        self.reserve = dict(reserve or {})
        self.jitter = jitter
        self.rng = rng
        self.fifo = fifo  # first come, first served instead of EDF (for comparison)
        self.shared = shared  # other replicas use the same slots: only our running ones free up for us
        self.in_flight = 0
        self.running: Counter[str] = Counter()
        self.depth = 0  # waiting entries (cancelled ones may linger in the heaps until popped)
        self.forecast = Forecast()
        self.budgets: dict[str, float] = {}  # the latest budget seen per class
        self._running: set[Entry] = set()
        self._heaps: dict[str, list[Entry]] = {}
        self._seq = 0

    @property
    def limit(self) -> int:
        return self.controller.limit

    def reserved(self, cls: str) -> int:
        share = self.reserve.get(cls, 0.0)
        if share <= 0:
            return 0
        limit = self.limit
        return max(math.floor(limit * share), 1 if limit >= 3 else 0)

    def may_start(self, cls: str) -> bool:
        free = self.limit - self.in_flight
        held = sum(max(0, self.reserved(k) - self.running[k]) for k in self.reserve if k != cls)
        return free - held > 0

    def arrive(self, cls: str, budget: float, now: float) -> Entry | Shed:
        """Start at once, queue, or shed. A started entry has ``state == STARTED``."""
        self._seq += 1
        self.budgets[cls] = budget
        self.forecast.arrived(cls, now)
        entry = Entry(cls, now, now + budget, self._seq, now if self.fifo else now + budget)
        if self.may_start(cls) and not self._waiting_before(entry):
            self._start(entry, now)
            return entry
        if self.depth >= self.bound:
            return Shed("queue_full", self.retry_after(now))
        if not self._feasible(entry, now):
            return Shed("deadline_unreachable", self.retry_after(now))
        heapq.heappush(self._heaps.setdefault(cls, []), entry)
        self.depth += 1
        return entry

    def _waiting_before(self, entry: Entry) -> bool:
        """Whether a waiter that may start now comes before ``entry`` (it must then go first)."""
        for cls, heap in self._heaps.items():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
            if heap and heap[0] < entry and self.may_start(cls):
                return True
        return False

    def _waiting(self) -> list[Entry]:
        # Sorted on (key, seq) tuples: the order of ``Entry.__lt__``, compared without a Python call each.
        return sorted((e for heap in self._heaps.values() for e in heap if e.state == QUEUED), key=_order)

    def _starts(self, now: float, order: list[Entry]) -> list[float] | None:
        free = 0 if self.shared else max(self.limit - self.in_flight, 0)
        return self.forecast.starts(now, self._running, free, order)

    def _feasible(self, entry: Entry, now: float) -> bool:
        """Whether ``entry`` can start before its deadline, and going ahead of the waiters it passes does
        not make one of them miss a deadline it would have met (EDF's admission test, on the forecast).
        Unknown, so admitted, until a holding time was measured."""
        waiting = self._waiting()
        ahead = bisect.bisect_left(waiting, _order(entry), key=_order)
        after = self._starts(now, [*waiting[:ahead], entry, *waiting[ahead:]])
        # The waiters ``entry`` passes are those after it; when it goes last (the usual case: a later
        # arrival of the same class) there are none, and their forecast without it is not needed.
        before = self._starts(now, waiting) if ahead < len(waiting) else after
        if after is None or before is None:
            return True
        start = after[ahead]
        if not self.fifo:  # later arrivals with earlier deadlines will pass it: leave them room
            slots = max(self.in_flight, 1) if self.shared else self.limit
            start = self.forecast.with_arrivals(now, start, entry.deadline, self.budgets, slots)
        if start > entry.deadline:
            return False
        return not any(after[k + 1] > waiting[k].deadline >= before[k] for k in range(ahead, len(waiting)))

    def retry_after(self, now: float) -> float:
        """When to come back: the predicted drain time of the queue, jittered, within 1-60 s."""
        starts = self._starts(now, self._waiting())
        drain = (starts[-1] - now) if starts else RETRY_MIN
        drain *= 1 + self.jitter * (2 * self.rng() - 1)
        return min(max(drain, RETRY_MIN), RETRY_MAX)

    def pop_ready(self, now: float) -> Entry | None:
        """Start the earliest-deadline waiter that may start now, if any."""
        best: Entry | None = None
        for cls, heap in self._heaps.items():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best) and self.may_start(cls):
                best = heap[0]
        if best is None:
            return None
        heapq.heappop(self._heaps[best.cls])
        self.depth -= 1
        self._start(best, now)
        return best

    def _start(self, entry: Entry, now: float) -> None:
        entry.state, entry.started_at = STARTED, now
        self._running.add(entry)
        self.in_flight += 1
        self.running[entry.cls] += 1
        entry.epoch = self.controller.dispatched(self.in_flight)

    def unstart(self, entry: Entry) -> None:
        """Put a just-started entry back at its place (no room across the replicas after all)."""
        if entry.state != STARTED:
            return
        entry.state = QUEUED
        self._running.discard(entry)
        self.in_flight -= 1
        self.running[entry.cls] -= 1
        heapq.heappush(self._heaps.setdefault(entry.cls, []), entry)
        self.depth += 1

    def take(self, cls: str, now: float) -> Entry:
        """A slot taken past the queue (a request that fell back here from another upstream)."""
        self._seq += 1
        entry = Entry(cls, now, now, self._seq, now)
        self._start(entry, now)
        return entry

    def finish(self, entry: Entry, now: float) -> None:
        """The request let its slot go (reply done, stream ended or broke, client left)."""
        if entry.state != STARTED:
            return
        entry.state = DONE
        self._running.discard(entry)
        self.in_flight -= 1
        self.running[entry.cls] -= 1
        # A launch's wait is no measure of how long this class holds a slot: one first request that
        # started the embedded server would otherwise make every later one look hopeless and be shed.
        self.forecast.observe(entry.cls, now - entry.started_at - entry.launch)
        self.controller.slot_gap = (self.forecast.mean or 0.0) / max(self.limit, 1)

    def cancel(self, entry: Entry) -> None:
        """The client left while waiting."""
        if entry.state == QUEUED:
            entry.state = CANCELLED
            self.depth -= 1

    def expire(self, now: float) -> list[Entry]:
        """Remove and return the waiters whose deadline has passed."""
        gone: list[Entry] = []
        for heap in self._heaps.values():
            while heap and (heap[0].state != QUEUED or heap[0].deadline <= now):
                entry = heapq.heappop(heap)
                if entry.state == QUEUED:
                    entry.state = EXPIRED
                    self.depth -= 1
                    gone.append(entry)
        return gone

    def next_deadline(self) -> float | None:
        """The earliest deadline among the waiters (when the expiry timer must next fire)."""
        for heap in self._heaps.values():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
        return min((heap[0].deadline for heap in self._heaps.values() if heap), default=None)
