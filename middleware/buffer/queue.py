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
  deadlines, or quicker classes) at their recent rates. A request that cannot start a margin before its
  deadline, or whose going ahead would make a waiter it passes miss a deadline that waiter would have
  met, or that finds the queue at its bound, is shed at once with a Retry-After of the predicted drain
  time. So what is admitted is (as far as the prediction goes) served in time, and expiry stays the
  exception.
- A waiting request whose client leaves is removed; one still waiting at its deadline expires.

Pure: the caller passes ``now`` and applies what the queue decides (starting waiters, replying to the shed).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping

from middleware.buffer.controller import Controller
from middleware.buffer.entry import CANCELLED, DONE, EXPIRED, ORDER, QUEUED, STARTED, Entry, Shed
from middleware.buffer.forecast import Forecast
from middleware.buffer.reserve import Reserve

__all__ = ["CANCELLED", "DONE", "EXPIRED", "QUEUED", "STARTED", "Entry", "Gate", "Shed"]

RETRY_MIN, RETRY_MAX = 1.0, 60.0  # the range the OpenAI SDKs honour
MARGIN_OF_BUDGET = 0.2  # the most of a request's budget its forecast margin may take
MARGIN_SPREADS = 3.0  # a start's error allowance in its holds' mean absolute deviations (see ``margin``)
# The least share of the slot gap kept however steady the holds: a start's error also has the proxy's and
# the upstream's stalls in it (a loaded CPU), which a spread measured over whole holds hardly sees.
MARGIN_FLOOR = 0.5


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
        free = self.limit - self.in_flight
        return free > 0 and self.reserve.may_take(cls, self.limit, free, now)

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

    def _starts(
        self, now: float, order: list[Entry], cls: str = "", errors: list[float] | None = None
    ) -> list[float] | None:
        """The forecast's starts (and their expected errors into ``errors``); for ``cls``, without the
        slots other classes keep from it in reserve (free ones, and the last of their running ones to
        free)."""
        if not cls or not self.reserve.shares:
            return self.forecast.starts(now, self._running, self._free(), order, None, errors)
        kept = self.reserve.kept_from(cls, self.limit, now)
        return self.forecast.starts(now, self._running, self._free(cls, now), order, kept, errors)

    def _free(self, cls: str = "", now: float = 0.0) -> int:
        """Free slots (for ``cls``: those other classes do not keep from it in reserve)."""
        free = 0 if self.shared else max(self.limit - self.in_flight, 0)
        return self.reserve.usable(cls, self.limit, free, now) if cls and free else free

    def _stretch(self, cls: str, now: float) -> float:
        """How much slower than the plain replay a queue that quicker classes pass drains: their requests
        take the slots that free while its waiters have slack, so at overload it is left little more than
        what the other classes do not keep in reserve. Nobody passes the quickest class: its replay with
        the kept slots left out is its forecast as it is."""
        service = self.forecast.service(cls)
        if not any(self.forecast.service(c) < service for c in self.budgets):
            return 1.0
        usable = self.limit - self.reserve.claimed(cls, self.limit, now)
        replayed = self.reserve.usable(cls, self.limit, self.limit - self.in_flight, now) + self.in_flight
        return replayed / usable if 0 < usable < replayed else 1.0

    def _last_start(self, now: float) -> float:
        """No replay of the waiters on the slots starts one later than this (with at least one slot
        usable, and the forecast's holding times): every slot frees by its running request's class's
        mean from now, and the waiters' work done one after another on one slot. O(classes)."""
        service = self.forecast.service
        end = now + max((service(c) for c, n in self.running.items() if n > 0), default=0.0)
        for cls, n in self.waiting.items():
            if n > 0:
                end += n * service(cls)
        return end

    def _ends_before(self, now: float, deadline: float | None, margin: float) -> bool:
        """Whether every replay of the waiters starts them all ``margin`` before ``deadline``."""
        return deadline is None or self._last_start(now) <= deadline - margin

    def _surely_in_time(self, entry: Entry, now: float) -> bool:
        """A bound that settles most arrivals without replaying the queue (which costs a sort and a few
        replays per arrival: at a fast upstream, more than the rest of the request). One slot at least is
        always usable (the reserves leave one to anybody), so every start in any replay of the queue with
        ``entry`` comes before the last running request's expected end plus all the waiting work done on
        that one slot; stretched and pushed back by every arrival expected before its deadline, if that
        still leaves the widest margin before its deadline, and comes before every waiter's deadline,
        ``_late`` would find it in time too."""
        f = self.forecast
        if f.mean is None:
            return True
        service = f.service
        end = self._last_start(now) + service(entry.cls)
        head = self.next_deadline()
        if head is not None and end > head:
            return False
        start = now + (end - now) * self._stretch(entry.cls, now)
        if not self.fifo:
            slots = max(self.in_flight, 1) if self.shared else self.limit
            own, deadline = service(entry.cls), entry.deadline
            start += sum(  # ``with_arrivals``' windows, with its push at most to the deadline
                f.rate(c, now) * max(0.0, (deadline if service(c) < own else deadline - b) - now) * service(c)
                for c, b in self.budgets.items()
            ) / max(slots, 1)
        return start <= entry.deadline - f.mean / max(self.limit, 1)

    def _late(self, entry: Entry, now: float) -> float | None:
        """None when ``entry`` can start before its deadline and going ahead of the waiters it passes does
        not make one of them miss a deadline it would have met (EDF's admission test, on the forecast);
        otherwise the predicted drain time of the queue with it, for its Retry-After. A class with reserved
        slots starts at the latest when its own requests ahead free them. Unknown, so in time, until a
        holding time was measured."""
        waiting = self._waiting()
        ahead = bisect.bisect_left(waiting, ORDER(entry), key=ORDER)
        errors: list[float] = []
        order = [*waiting[:ahead], entry, *waiting[ahead:]]
        after = self._starts(now, order, entry.cls, errors)
        if after is None:
            return None
        drain = after[-1] - now
        start, variance = after[ahead], errors[ahead] ** 2
        lane = None
        if lanes := self.reserve.slots(entry.cls, self.limit):  # they serve its own class, at the least
            mine = [w for w in waiting[:ahead] if w.cls == entry.cls]
            free = 0 if self.shared else max(self.limit - self.in_flight, 0)
            lane = self.forecast.lane_start(now, self._running, free, entry.cls, lanes, [*mine, entry])
        if min(start, math.inf if lane is None else lane) > entry.deadline:
            return drain  # late already: what follows only moves its start later, or to the lane's
        if (stretch := self._stretch(entry.cls, now)) > 1.0:
            replayed = self.forecast.starts(now, self._running, self._free(entry.cls, now), order)
            assert replayed is not None
            start = max(start, now + (replayed[ahead] - now) * stretch)
        if not self.fifo:  # later arrivals with earlier deadlines will pass it: leave them room
            slots = max(self.in_flight, 1) if self.shared else self.limit
            forecast, budgets = self.forecast, self.budgets
            start = forecast.with_arrivals(now, start, entry.cls, entry.deadline, budgets, slots)
            variance += forecast.push_variance(now, start, entry.cls, entry.deadline, budgets, slots)
        start = start if lane is None else min(start, lane)
        # Passing waiters, it is judged with the full allowance: one of them whose slack runs out goes
        # first after all, an error the spreads do not measure.
        error = math.sqrt(variance) if ahead == len(waiting) else math.inf
        if start > entry.deadline - self.margin(entry, error):
            return drain
        if ahead == len(waiting):
            return None  # it passes nobody
        before = self._starts(now, waiting)
        assert before is not None
        passed = range(ahead, len(waiting))
        return drain if any(after[k + 1] > waiting[k].deadline >= before[k] for k in passed) else None

    def margin(self, entry: Entry, error: float = math.inf) -> float:
        """The forecast's error allowance for ``entry``: a start predicted closer to its deadline than this
        is taken as late, so what is admitted starts in time and expiry in the queue stays the exception.
        At most the mean gap between two slots freeing, and a fifth of its budget; and, given the
        predicted start's expected ``error`` (the spread of the holds it waits on, and the randomness of
        the arrivals expected to pass it), at most ``MARGIN_SPREADS`` of that but never less than
        ``MARGIN_FLOOR`` of the gap: a start that waits on one or two holds of a steady upstream, with
        nothing to pass it, is known well, and a request predicted to start in time at light load is
        not refused for an error the forecast does not make."""
        gap = (self.forecast.mean or 0.0) / max(self.limit, 1)
        known = max(MARGIN_SPREADS * error, MARGIN_FLOOR * gap)
        return min(gap, MARGIN_OF_BUDGET * (entry.deadline - entry.arrival), known)

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
        self.controller.slot_gap = (self.forecast.mean or 0.0) / max(self.limit, 1)

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
