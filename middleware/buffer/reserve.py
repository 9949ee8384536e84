"""Reserved shares of L: each class is guaranteed some slots, and lends them while it does not need them.

- A class with a share holds ``floor(L * share)`` slots, at least one once L >= 3, and together the classes
  hold at most L - 1: one slot is always anybody's. With L = 1 there is no reservation at all, and with
  the default shares (a quarter each) none with L = 2 either: the queue is plain EDF there (a share of
  a half or more reserves a slot from L = 2).
- While a class runs fewer requests than its reserved slots, a free slot is kept for it from the others
  (``held``): its waiters take the next slots to free, so at overload it still gets its share. A class
  below its reservation may take any free slot (``usable``), though other classes hold it too: their
  waiters would take it under their own reservations all the same, and were each to wait for the other,
  a slot would idle while both wait.
- A reservation is lent, work-conserving, while its class has nobody waiting and the borrower would give
  the slot back in time: the borrower's class holds a slot no longer than the owner's TTFT budget (a short
  question borrowing a long essay's slot), or the owner has gone quiet (its recent arrivals make one during
  the overrun unlikely). Lent to anybody, the short class's slot would be taken by long essays at low load,
  and a short question arriving behind four of them could not start within its budget.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from middleware.buffer.forecast import RATE_WINDOW, Forecast

LEND_RISK = 0.1  # at most this many of the owner's requests expected to arrive while the borrower overruns


class Reserve:
    """The classes' reserved slots, over the gate's running and waiting counts (shared, not copied)."""

    def __init__(
        self,
        shares: Mapping[str, float],
        running: Counter[str],
        waiting: Counter[str],
        forecast: Forecast,
        budgets: Mapping[str, float],
    ) -> None:
        self.shares = {cls: share for cls, share in shares.items() if share > 0}
        self.running, self.waiting, self.forecast, self.budgets = running, waiting, forecast, budgets
        self._counts: dict[int, dict[str, int]] = {}

    def slots(self, cls: str, limit: int) -> int:
        """The slots reserved for ``cls`` when L is ``limit``."""
        return self._slots_at(limit).get(cls, 0)

    def _slots_at(self, limit: int) -> dict[str, int]:
        """The slots reserved for each class when L is ``limit`` (made once per L)."""
        counts = self._counts.get(limit)
        if counts is None:
            counts, left = {}, limit - 1  # one slot stays anybody's
            for name, share in sorted(self.shares.items(), key=lambda kv: -kv[1]):
                counts[name] = min(max(math.floor(limit * share), 1 if limit >= 3 else 0), left)
                left -= counts[name]
            self._counts[limit] = counts
        return counts

    def usable(self, cls: str, limit: int, free: int, now: float) -> int:
        """Of ``free`` slots, how many ``cls`` may take: those no other class holds, and at least the ones
        that fill its own reservation."""
        own = max(0, self.slots(cls, limit) - self.running[cls])
        return max(free - self.held(cls, limit, now), min(free, own), 0)

    def may_take(self, cls: str, limit: int, free: int, now: float) -> bool:
        """Whether ``cls`` may take one of ``free`` slots (``usable(...) > 0``), without asking the other
        classes whether they keep their reservations while more slots are free than they could keep."""
        if not self.shares:
            return free > 0
        unfilled, running = 0, self.running
        for k, slots in self._slots_at(limit).items():
            if k != cls and (short := slots - running.get(k, 0)) > 0:
                unfilled += short
        return free > unfilled or self.usable(cls, limit, free, now) > 0

    def held(self, cls: str, limit: int, now: float) -> int:
        """Free slots ``cls`` may not take: other classes' reservations they do not fill now and do not
        lend to ``cls``."""
        return sum(
            max(0, self.slots(k, limit) - self.running[k])
            for k in self.shares
            if k != cls and self.claims(k, cls, now)
        )

    def claimed(self, cls: str, limit: int, now: float) -> int:
        """Slots other classes keep from ``cls``, filled or not."""
        return sum(self.slots(k, limit) for k in self.shares if k != cls and self.claims(k, cls, now))

    def kept_from(self, cls: str, limit: int, now: float) -> dict[str, int]:
        """Per other class keeping its reservation from ``cls``: the slots it keeps (of its running
        ones, the last to free go back to it, not to ``cls``)."""
        return {
            k: self.slots(k, limit)
            for k in self.shares
            if k != cls and self.slots(k, limit) > 0 and self.claims(k, cls, now)
        }

    def claims(self, owner: str, cls: str, now: float) -> bool:
        """Whether ``owner`` keeps its reserved slots from ``cls`` (see the module's docstring)."""
        if self.waiting[owner] > 0:
            return True
        budget = self.budgets.get(owner)
        if budget is None:  # never seen: nobody to keep it for
            return False
        overrun = self.forecast.service(cls) - budget
        return overrun > 0 and self.forecast.rate(owner, now) * overrun >= LEND_RISK

    def lends_in(self, limit: int, now: float) -> float | None:
        """Seconds until a class stops keeping, by its recent arrivals alone, an unfilled reservation from
        a class that waits (its arrivals decay while none come); None when no wait hangs on that."""
        times = []
        for owner in self.shares:
            budget = self.budgets.get(owner)
            if self.waiting[owner] > 0 or budget is None or self.slots(owner, limit) <= self.running[owner]:
                continue
            rate = self.forecast.rate(owner, now)
            for cls, count in self.waiting.items():
                overrun = self.forecast.service(cls) - budget
                if cls != owner and count > 0 and overrun > 0 and rate * overrun >= LEND_RISK:
                    times.append(RATE_WINDOW * math.log(rate * overrun / LEND_RISK))
        return min(times, default=None)
