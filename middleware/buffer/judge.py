"""Whether a request that cannot start now can start in time if it waits: the admission test of the
queue (``Gate``), on the forecast's replay of the queue on the slots, with cheap bounds that settle most
arrivals and passes without the replay (they decide as the replay would)."""

from __future__ import annotations

import bisect
import math
from collections import Counter

from middleware.buffer.entry import ORDER, Entry
from middleware.buffer.forecast import Forecast
from middleware.buffer.reserve import Reserve

MARGIN_OF_BUDGET = 0.2  # the most of a request's budget its forecast margin may take
MARGIN_SPREADS = 3.0  # a start's error allowance in its expected errors (standard deviations; see ``margin``)


class Judge:
    """The admission test, mixed into ``Gate``: it reads the gate's counts, queue and forecast."""

    forecast: Forecast
    reserve: Reserve
    budgets: dict[str, float]
    fifo: bool
    shared: bool
    in_flight: int
    running: Counter[str]
    waiting: Counter[str]
    _running: set[Entry]

    @property
    def limit(self) -> int:
        raise NotImplementedError

    def _waiting(self) -> list[Entry]:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        raise NotImplementedError

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
        that one slot; stretched and pushed back by every arrival expected before its deadline (spread
        over the slots no other class could keep from it in reserve), if that still leaves the widest
        margin before its deadline, and comes before every waiter's deadline, ``_late`` would find it in
        time too."""
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
            slots -= sum(self.reserve.slots(k, self.limit) for k in self.reserve.shares if k != entry.cls)
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
            kept = self.reserve.kept_from(entry.cls, self.limit, now) if self.reserve.shares else None
            start = forecast.with_arrivals(now, start, entry.cls, entry.deadline, budgets, slots, kept)
            variance += forecast.push_variance(now, start, entry.cls, entry.deadline, budgets, slots, kept)
        start = start if lane is None else min(start, lane)
        # A waiter it passes that may still take a slot before it moves its start by a slot gap, an error
        # the spreads do not measure: judged with the full allowance then.
        overtaken = self._overtaken(entry, waiting[ahead:], now)
        error = math.inf if overtaken else math.sqrt(variance)
        if start > entry.deadline - self.margin(entry, error):
            return drain
        if ahead == len(waiting):
            return None  # it passes nobody
        # A waiter it passes keeps the allowance the queue keeps for it when a quicker request passes it
        # at a slot (``_quicker``): passing one that would start in time is refused when it would leave
        # it starting within that allowance of its deadline.
        before = self._starts(now, waiting)
        assert before is not None
        for k in range(ahead, len(waiting)):
            w = waiting[k]
            if after[k + 1] > w.deadline - self.margin(w) and before[k] <= w.deadline:
                return drain
        return None

    def _overtaken(self, entry: Entry, passed: list[Entry], now: float) -> bool:
        """Whether a waiter ``entry`` goes ahead of may still start before it, which its replay does not
        show: one of a quicker class (it goes first within its slack, ``_quicker``), or of a class that
        keeps a reserved slot it does not fill from ``entry``'s class (it takes the next slot to free).
        A waiter of a slower class without such a slot always starts after it."""
        own = self.forecast.service(entry.cls)
        for cls in {w.cls for w in passed}:
            if self.forecast.service(cls) < own:
                return True
            unfilled = self.reserve.slots(cls, self.limit) > self.running[cls]
            if unfilled and self.reserve.claims(cls, entry.cls, now):
                return True
        return False

    def margin(self, entry: Entry, error: float = math.inf) -> float:
        """The forecast's error allowance for ``entry``: a start predicted closer to its deadline than this
        is taken as late, so what is admitted starts in time and expiry in the queue stays the exception.
        At most the mean gap between two slots freeing, and a fifth of its budget; and, given the
        predicted start's expected ``error`` (the standard deviation of the holds it waits on, summed as
        independent errors, and of the arrivals expected to pass it), ``MARGIN_SPREADS`` of that. A start
        that waits on a few holds of a steady upstream, with nothing to pass it, is known well (the more
        holds it sums, the less well), and a request predicted to start in time at light load is not
        refused for an error the forecast does not make. A stall of the proxy or the upstream lengthens
        the holds it falls in, so it widens the spread, and the margin, by its square."""
        gap = (self.forecast.mean or 0.0) / max(self.limit, 1)
        return min(gap, MARGIN_OF_BUDGET * (entry.deadline - entry.arrival), MARGIN_SPREADS * error)
