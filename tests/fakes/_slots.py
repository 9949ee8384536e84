"""The slot pool of the fixed-capacity fake: N slots, a FIFO of waiters, N changeable while it runs."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class SlotPool:
    """First come, first served admission to ``limit`` slots.

    A waiter is handed its slot by the releaser (``running`` is counted for it before it wakes), so a
    slot freed while many wait goes to the oldest one and is never taken by a newcomer in between.
    Lowering ``limit`` lets running requests finish; nobody new starts until ``running < limit``.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a slot pool needs at least one slot")
        self._limit = limit
        self.running = 0
        self.max_running = 0
        self.max_waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy_s = 0.0
        self._since: dict[int, float] = {}  # slot id -> when it was taken

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        if value < 1:
            raise ValueError("a slot pool needs at least one slot")
        self._limit = value
        self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy_ids(self) -> set[int]:
        return set(self._since)

    def busy_seconds(self) -> float:
        """Slot-seconds spent serving, those of the requests still running included."""
        now = time.monotonic()
        return self._busy_s + sum(now - t for t in self._since.values())

    async def acquire(self) -> int:
        """Wait for a slot and return its id. A waiter that is cancelled (its client left: the fake's
        handlers are cancelled on disconnect) leaves the queue at once, as in the real servers."""
        if self.running < self._limit and not self._waiters:
            self._count_in()
            return self._take_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.max_waiting = max(self.max_waiting, len(self._waiters))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.running -= 1  # the slot was handed over just as we left: pass it on
                self._wake()
            else:
                fut.cancel()
                if fut in self._waiters:  # _wake may already have dropped it, cancelled
                    self._waiters.remove(fut)
            raise
        return self._take_id()

    def release(self, slot_id: int) -> None:
        self._busy_s += time.monotonic() - self._since.pop(slot_id)
        self.running -= 1
        self._wake()

    def _count_in(self) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)

    def _take_id(self) -> int:
        slot_id = next(i for i in range(len(self._since) + 1) if i not in self._since)
        self._since[slot_id] = time.monotonic()
        return slot_id

    def _wake(self) -> None:
        while self._waiters and self.running < self._limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._count_in()
                fut.set_result(None)
