"""The admission queue of one upstream: at most L requests in flight, the rest waiting in deadline order.

- A request's deadline is its arrival plus its query class's TTFT budget. The queue serves the earliest
  deadline first (EDF): a short question passes a long essay that arrived before it, and a long request
  still reaches the head once its deadline is the earliest, so nothing starves. Within the deadlines'
  slack, a class that holds a slot for less time goes first (short questions pass long requests that
  would still start in time).
- A class may hold a reserved share of L (``Reserve``): a burst of long jobs cannot occupy every slot, and
  at overload short questions cannot take every slot from the long class; unused, the share is lent.
- On arrival, the predicted start comes from replaying the queue on the slots (``Forecast``: each class's
  mean holding time, the running requests' time already spent, the slots other classes keep in
  reserve) and, under EDF, pushed back by the requests expected to arrive meanwhile and go ahead (earlier
  deadlines, or quicker classes) at their recent rates, less the work the slots their class keeps from it
  in reserve take (left out of its replay, those serve them first). A request that cannot start a margin
  before its deadline, or whose going ahead would leave a waiter it passes starting within its margin of a
  deadline that waiter would have met, or that finds the queue at its bound, is shed at once with a
  Retry-After of the predicted drain time. So what is admitted is (as far as the prediction goes) served
  in time, and expiry stays the exception.
- A waiting request whose client leaves is removed; one still waiting at its deadline expires.

Pure: the caller passes ``now`` and applies what the queue decides (starting waiters, replying to the shed).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Mapping

from middleware.buffer.controller import Controller
from middleware.buffer.entry import CANCELLED, DONE, EXPIRED, ORDER, QUEUED, STARTED, Entry, Shed
from middleware.buffer.forecast import Forecast
from middleware.buffer.judge import Judge
from middleware.buffer.reserve import Reserve

__all__ = ["CANCELLED", "DONE", "EXPIRED", "QUEUED", "STARTED", "Entry", "Gate", "Shed"]

RETRY_MIN, RETRY_MAX = 1.0, 60.0  # the range the OpenAI SDKs honour


class Gate(Judge):
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
        self.jitter = jitter
        self.rng = rng
        self.fifo = fifo  # first come, first served instead of EDF (for comparison)
        self.shared = shared  # other replicas use the same slots: only our running ones free up for us
        self.in_flight = 0
        self.running: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()  # per class (cancelled ones may linger in the heaps)
        self.forecast = Forecast()
        self.budgets: dict[str, float] = {}  # the latest budget seen per class
        self.reserve = Reserve(reserve or {}, self.running, self.waiting, self.forecast, self.budgets)
        self._running: set[Entry] = set()
        self._heaps: dict[str, list[Entry]] = {}
        self._seq = 0

    @property
    def limit(self) -> int:
        return self.controller.limit

    @property
    def depth(self) -> int:
        """Waiting entries, all classes."""
        return sum(self.waiting.values())

    def may_start(self, cls: str, now: float) -> bool:
        limit = self.controller.limit
        free = limit - self.in_flight
        return free > 0 and self.reserve.may_take(cls, limit, free, now)

    def arrive(self, cls: str, budget: float, now: float) -> Entry | Shed:
        """Start at once, queue, or shed. A started entry has ``state == STARTED``."""
        self._seq += 1
        self.budgets[cls] = budget
        self.forecast.arrived(cls, now)
        entry = Entry(cls, now, now + budget, self._seq, now if self.fifo else now + budget)
        if self.may_start(cls, now) and not self._waiting_before(entry, now):
            self._start(entry, now)
            return entry
        if (shed := self._refusal(entry, now)) is not None:
            return shed
        heapq.heappush(self._heaps.setdefault(cls, []), entry)
        self.waiting[cls] += 1
        return entry

    def check(self, cls: str, budget: float, now: float) -> Shed | None:
        """The refusal ``arrive`` would answer now, without taking a place: lets a request be shed before
        costly work that would be wasted on it. A refused request counts in the demand, as in ``arrive``;
        one that would be admitted counts when it arrives."""
        entry = Entry(cls, now, now + budget, self._seq + 1, now if self.fifo else now + budget)
        if self.may_start(cls, now) and not self._waiting_before(entry, now):
            return None
        shed = self._refusal(entry, now)
        if shed is not None:
            self.budgets[cls] = budget
            self.forecast.arrived(cls, now)
        return shed

    def _refusal(self, entry: Entry, now: float) -> Shed | None:
        """Why a request that cannot start now may not wait either: the queue is at its bound, or it
        cannot start in time."""
        if self.depth >= self.bound:
            return Shed("queue_full", self.retry_after(now))
        if self._surely_in_time(entry, now):
            return None
        if (drain := self._late(entry, now)) is not None:
            return Shed("deadline_unreachable", self._jittered(drain))
        return None

    def _waiting_before(self, entry: Entry, now: float) -> bool:
        """Whether a waiter that may start now comes before ``entry`` (it must then go first)."""
        for cls, heap in self._heaps.items():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
            if heap and heap[0] < entry and self.may_start(cls, now):
                return True
        return False

    def _waiting(self) -> list[Entry]:
        return sorted((e for heap in self._heaps.values() for e in heap if e.state == QUEUED), key=ORDER)

    def retry_after(self, now: float) -> float:
        """When to come back: the predicted drain time of the queue, jittered, within 1-60 s."""
        starts = self._starts(now, self._waiting())
        return self._jittered((starts[-1] - now) if starts else RETRY_MIN)

    def _jittered(self, drain: float) -> float:
        drain *= 1 + self.jitter * (2 * self.rng() - 1)
        return min(max(drain, RETRY_MIN), RETRY_MAX)

    def pop_ready(self, now: float) -> Entry | None:
        """Start the waiter that goes next, if one may start now: the earliest deadline, unless a quicker
        class's head can go first without making any waiter it passes miss its deadline."""
        heads: list[Entry] = []
        for cls, heap in self._heaps.items():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
            if heap and self.may_start(cls, now):
                heads.append(heap[0])
        if not heads:
            return None
        best = min(heads)
        if not self.fifo and len(heads) > 1:
            best = self._quicker(best, heads, now)
        heapq.heappop(self._heaps[best.cls])
        self.waiting[best.cls] -= 1
        self._start(best, now)
        return best

    def _quicker(self, first: Entry, heads: list[Entry], now: float) -> Entry:
        """Shortest job first within the deadlines' slack: the head of a class that holds a slot for less
        time than ``first``'s passes the waiters ahead of it when, replayed on the slots, each of them still
        starts a margin (see ``margin``) before its deadline. Without this, EDF under
        overload serves a short question only once its own deadline nears, since the long requests
        admitted before it fill the queue up to theirs; with it, short questions start at the next free
        slot while every admitted long request is still served in time."""
        service = self.forecast.service
        quicker = sorted(
            (e for e in heads if service(e.cls) < service(first.cls)), key=lambda e: service(e.cls)
        )
        if not quicker or self.forecast.mean is None:
            return first
        if self._ends_before(now, self.next_deadline(), self.forecast.mean / max(self.limit, 1)):
            return quicker[0]  # whoever goes first, every waiter starts in time
        waiting = self._waiting()
        for candidate in quicker:
            ahead = waiting.index(candidate)
            passed = waiting[:ahead]
            starts = self._starts(now, [candidate, *passed])
            if starts is not None and all(
                start <= w.deadline - self.margin(w) for start, w in zip(starts[1:], passed, strict=True)
            ):
                return candidate
        return first

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
        self.waiting[entry.cls] += 1

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
        controller = self.controller
        controller.slot_gap = (self.forecast.mean or 0.0) / max(controller.limit, 1)

    def cancel(self, entry: Entry) -> None:
        """The client left while waiting."""
        if entry.state == QUEUED:
            entry.state = CANCELLED
            self.waiting[entry.cls] -= 1

    def expire(self, now: float) -> list[Entry]:
        """Remove and return the waiters whose deadline has passed."""
        gone: list[Entry] = []
        for heap in self._heaps.values():
            while heap and (heap[0].state != QUEUED or heap[0].deadline <= now):
                entry = heapq.heappop(heap)
                if entry.state == QUEUED:
                    entry.state = EXPIRED
                    self.waiting[entry.cls] -= 1
                    gone.append(entry)
        return gone

    def next_deadline(self) -> float | None:
        """The earliest deadline among the waiters (when the expiry timer must next fire)."""
        for heap in self._heaps.values():
            while heap and heap[0].state != QUEUED:
                heapq.heappop(heap)
        return min((heap[0].deadline for heap in self._heaps.values() if heap), default=None)
