"""When will a waiting request start? Replay the queue on the slots: each running request frees its slot
after its class's mean holding time less what it has already run, each waiter takes the first slot to
free and holds it for its own class's mean. Classes differ by an order of magnitude (a short answer against
a long essay), so one overall mean would predict a queue of essays as fast as a queue of questions."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

OVERDUE = 0.1  # a request running past its class's mean is assumed this share of that mean from its end
SMOOTHING = 0.1
# A class's spread is trusted once its average has seen as many deviations as it spans (1 / SMOOTHING): from
# two or three holds that happened to agree, a spread of almost nothing would let the admission test take
# its forecast as nearly exact.
TRUSTED = round(1 / SMOOTHING)
RATE_WINDOW = 3.0  # seconds over which arrivals per class are counted (exponential decay)
PUSH_ROUNDS = 50  # at most this many rounds to the fixed point of the arrivals' push (``with_arrivals``)


class Placed(Protocol):
    cls: str
    started_at: float


class Forecast:
    """Mean slot-holding time per class (EWMA), and the start times they predict."""

    __slots__ = ("by_class", "deviations", "mean", "rates", "variances")

    def __init__(self) -> None:
        self.mean: float | None = None  # over every class, for a class not seen yet
        self.by_class: dict[str, float] = {}
        # Per class, the mean square deviation of a holding time from the class's mean (EWMA), and how many
        # deviations it has seen: how far off a start predicted from that class's holds may be. A start
        # sums several holds, and the variances of a sum's terms add (their mean absolute deviations do
        # not): a rare stall weighs in it by its square, as it does in the start it delays.
        self.variances: dict[str, float] = {}
        self.deviations: dict[str, int] = {}
        self.rates: dict[str, tuple[float, float]] = {}  # class -> (decayed rate, when)

    def arrived(self, cls: str, now: float) -> None:
        """A request of ``cls`` arrived (admitted or not: the demand, which admission must leave room for,
        not the part of it that got in, which would let one class's admissions crowd out another's)."""
        rate, then = self.rates.get(cls, (0.0, now))
        self.rates[cls] = (rate * math.exp((then - now) / RATE_WINDOW) + 1 / RATE_WINDOW, now)

    def rate(self, cls: str, now: float) -> float:
        rate, then = self.rates.get(cls, (0.0, now))
        return rate * math.exp((then - now) / RATE_WINDOW)

    def with_arrivals(
        self,
        now: float,
        start: float,
        cls: str,
        deadline: float,
        budgets: Mapping[str, float],
        slots: int,
        kept: Mapping[str, int] | None = None,
    ) -> float:
        """``start`` pushed back by the requests expected to arrive before it and go ahead of it, at their
        recent rates: a class whose deadline (arrival + budget) comes before ``deadline`` (EDF), and a
        class quicker than ``cls``, which passes it whenever its slack allows (so, until it starts).
        ``kept``: per class, the slots it keeps from ``cls`` in reserve (left out of ``start``'s replay):
        its arrivals take those first, and only the work they cannot take lands on the other slots."""
        pushed = start
        own = self.service(cls)
        kept = kept or {}
        rates = {c: self.rate(c, now) * self.service(c) for c in budgets}  # slots' worth of work a second
        spare = max(slots - sum(kept.values()), 1)
        # The push widens the window it is computed over: iterate to the fixed point. Past the deadline the
        # answer is "late" however far, so stop there.
        for _ in range(PUSH_ROUNDS):
            work = sum(
                max(0.0, rates[c] - kept.get(c, 0))
                * max(0.0, min(pushed, pushed if self.service(c) < own else deadline - budget) - now)
                for c, budget in budgets.items()
            )
            nxt = start + work / spare
            if nxt > deadline or nxt - pushed < 1e-4:
                return nxt
            pushed = nxt
        return pushed

    def push_variance(
        self,
        now: float,
        start: float,
        cls: str,
        deadline: float,
        budgets: Mapping[str, float],
        slots: int,
        kept: Mapping[str, int] | None = None,
    ) -> float:
        """The variance of ``with_arrivals``' push up to ``start`` (its result): the requests that pass
        arrive at random (Poisson), so the work they bring varies by ``rate * window * service**2``
        (a compound Poisson sum), spread over the slots (those not ``kept`` from ``cls``). A class's
        kept slots take its mean work, not its bursts: its whole variance stays."""
        own = self.service(cls)
        var = sum(
            self.rate(c, now)
            * max(0.0, min(start, start if self.service(c) < own else deadline - budget) - now)
            * self.service(c) ** 2
            for c, budget in budgets.items()
        )
        return var / max(slots - sum((kept or {}).values()), 1) ** 2

    def observe(self, cls: str, held: float) -> None:
        old = self.by_class.get(cls)
        if old is not None:
            square, var = (held - old) ** 2, self.variances.get(cls)
            self.variances[cls] = square if var is None else var * (1 - SMOOTHING) + square * SMOOTHING
            self.deviations[cls] = self.deviations.get(cls, 0) + 1
        self.mean = held if self.mean is None else self.mean * (1 - SMOOTHING) + held * SMOOTHING
        self.by_class[cls] = held if old is None else old * (1 - SMOOTHING) + held * SMOOTHING

    def service(self, cls: str) -> float:
        return self.by_class.get(cls, self.mean or 0.0)

    def spread(self, cls: str) -> float | None:
        """How far off ``cls``'s mean one of its holding times typically is (a standard deviation); None
        until ``TRUSTED`` deviations were seen (the caller falls back to its cruder allowance)."""
        var = self._variance(cls)
        return None if math.isinf(var) else math.sqrt(var)

    def lane_start(
        self, now: float, running: Iterable[Placed], free: int, cls: str, lanes: int, order: Sequence[Placed]
    ) -> float | None:
        """The last of ``order`` (all of ``cls``) starts at the latest here when ``cls`` holds ``lanes``
        slots in reserve: its own running requests' slots, and while it runs fewer than its share, the
        first slots to free of the others'; None before anything was measured."""
        if self.mean is None or lanes <= 0:
            return None
        own: list[float] = []
        others = [now] * free
        for entry in running:
            (own if entry.cls == cls else others).append(self._frees(now, entry)[0])
        frees = sorted(own)[:lanes] + sorted(others)[: max(lanes - len(own), 0)]
        if not frees:
            return None
        heapq.heapify(frees)
        at = now
        for entry in order:
            at = heapq.heappop(frees)
            heapq.heappush(frees, at + self.service(entry.cls))
        return at

    def _frees(self, now: float, entry: Placed) -> tuple[float, float]:
        """When a running request frees its slot, and the variance of that time."""
        mean = self.service(entry.cls)
        return now + max(mean - (now - entry.started_at), OVERDUE * mean), self._variance(entry.cls)

    def starts(
        self,
        now: float,
        running: Iterable[Placed],
        free: int,
        order: Sequence[Placed],
        kept: Mapping[str, int] | None = None,
        errors: list[float] | None = None,
    ) -> list[float] | None:
        """Predicted start of each of ``order`` (in the order served), with ``free`` slots free now;
        None before anything was measured. ``kept``: per class, how many of its running requests' slots
        it keeps when they free (its reserved ones: the last of its slots to free), left out of the
        replay. ``errors``, when given, receives each start's expected error: the holds it waits on in a
        row on its slot, their variances added as independent errors (inf when a class's spread is not
        trusted yet)."""
        if self.mean is None:
            return None
        # (when the slot frees, the variance of that time)
        frees: list[tuple[float, float]] = [(now, 0.0)] * free
        if kept:
            by_class: dict[str, list[tuple[float, float]]] = {}
            for entry in running:
                if kept.get(entry.cls, 0) > 0:
                    by_class.setdefault(entry.cls, []).append(self._frees(now, entry))
                else:
                    frees.append(self._frees(now, entry))
            for cls, times in by_class.items():
                times.sort()
                frees.extend(times[: max(len(times) - kept[cls], 0)])
        else:
            frees.extend(self._frees(now, entry) for entry in running)
        if not frees:
            frees = [(now, 0.0)]
        heapq.heapify(frees)
        starts = []
        for entry in order:
            at, var = heapq.heappop(frees)
            starts.append(at)
            if errors is not None:
                errors.append(math.sqrt(var))
            heapq.heappush(frees, (at + self.service(entry.cls), var + self._variance(entry.cls)))
        return starts

    def _variance(self, cls: str) -> float:
        if self.deviations.get(cls, 0) < TRUSTED:
            return math.inf
        return self.variances[cls]
