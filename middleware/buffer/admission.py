"""One upstream's gate on the event loop: waiting, waking, expiry, and the in-flight count shared by replicas.

``Gate`` decides; this module applies its decisions with futures and two timers. A waiter whose client
leaves is cancelled by its task's cancellation (the route cancels the task on disconnect) and leaves the
queue at once. The expiry timer always sits at the earliest waiting deadline. Whether a waiter may start
changes with the waiting counts (so cancelling and expiring wake the queue, as releasing a slot does) and
with time alone: a class keeps its reservation from the others while its recent arrivals make one likely,
and those decay. So while a slot is free and a request waits on such a reservation, a recheck timer wakes
the queue when the reservation is lent (at the latest every ``RECHECK`` seconds); with nobody waiting, or
no slot free, it is off.

With a ``SharedCount`` (Redis, through the limiter's concurrency leases), a request also needs a lease
under the upstream's L counted across every replica. A queue head that finds no room retries every
``shared_poll`` seconds: other replicas' releases are not signalled, and one lease attempt per replica per
poll is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Protocol

from middleware.buffer.queue import QUEUED, STARTED, Entry, Gate, Shed
from proxy.errors import Overloaded

RECHECK = 0.5  # seconds: the longest a free slot waits for a recheck while a reservation is kept for arrivals
SHED_STATUS = {"queue_full": 429, "deadline_unreachable": 429, "expired": 503, "upstream_unavailable": 503}
SHED_MESSAGE = {
    "queue_full": "The queue for this model is full; retry after the time in Retry-After.",
    "deadline_unreachable": "This request cannot start within its time budget; retry after Retry-After.",
    "expired": "This request waited its whole time budget in the queue without starting.",
    "upstream_unavailable": "Every upstream for this model is down; retry after Retry-After.",
}


def overloaded(shed: Shed) -> Overloaded:
    return Overloaded(
        SHED_MESSAGE[shed.reason],
        status=SHED_STATUS[shed.reason],
        code=shed.reason,
        retry_after=shed.retry_after,
    )


class SharedCount(Protocol):
    """Requests in flight to one upstream, counted across replicas."""

    async def take(self, upstream: str, limit: int) -> object | None:
        """A lease when fewer than ``limit`` are in flight everywhere, else None."""
        ...

    async def give(self, lease: object) -> None: ...


class Admission:
    """The gate of one upstream, driven by the event loop."""

    def __init__(
        self,
        name: str,
        gate: Gate,
        shared: SharedCount | None = None,
        shared_poll: float = 0.02,
        on_change: Callable[[Admission], None] = lambda _: None,
    ) -> None:
        self.name = name
        self.gate = gate
        self.shared = shared
        self.shared_poll = shared_poll
        self.on_change = on_change  # metrics: depth, in flight and L changed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._recheck: asyncio.TimerHandle | None = None
        self._pumping: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def enter(self, cls: str, budget: float) -> Entry:
        """Wait for a slot; raise ``Overloaded`` when shed or expired."""
        entry = self.arrive(cls, budget, asyncio.get_running_loop().time())
        if self.waits(entry):
            await self.wait(entry)
        return entry

    def arrive(self, cls: str, budget: float, now: float) -> Entry:
        """Take a place at ``now`` (the loop's time): an entry that holds its slot already, or one that must
        ``wait`` for it first (see ``waits``); raise ``Overloaded`` when shed. A request that finds a slot
        free and nobody waiting, with no shared count to ask, is done here: no future, no timer."""
        result = self.gate.arrive(cls, budget, now)
        if isinstance(result, Shed):
            raise overloaded(result)
        if result.state == STARTED and self.shared is None:
            self.on_change(self)
        return result

    def waits(self, entry: Entry) -> bool:
        """Whether an entry ``arrive`` gave must still ``wait``: it is queued, or the replicas' shared count
        has to grant it a lease."""
        return entry.state != STARTED or self.shared is not None

    async def wait(self, entry: Entry) -> None:
        """Wait until ``entry`` (from ``arrive``) holds its slot; raise ``Overloaded`` when it expires."""
        loop = asyncio.get_running_loop()
        if entry.state == STARTED:
            try:
                granted = self.shared is None or await self._lease(entry)
            except BaseException:  # the client left while the shared count was asked
                self.leave(entry)
                raise
            if granted:
                self.on_change(self)
                return
            self.gate.unstart(entry)  # room here, none across the replicas: wait like the others
            self._pump()
        waiter: asyncio.Future[None] = loop.create_future()
        entry.waiter = waiter
        self._arm(loop)
        self._settle()
        self.on_change(self)
        try:
            await waiter
        except asyncio.CancelledError:
            if entry.state == STARTED:  # woken just as the client left: pass the slot on
                self.leave(entry)
            elif entry.state == QUEUED:
                self.gate.cancel(entry)  # it may have held a reservation from the others
                self._pump()
            raise

    def leave(self, entry: Entry) -> None:
        """Give the slot back (reply sent, stream over or broken, client gone). Safe to call twice."""
        if entry.state != STARTED:
            return
        self.gate.finish(entry, asyncio.get_running_loop().time())
        if entry.lease is not None and self.shared is not None:
            lease, entry.lease = entry.lease, None
            # Give the lease back first, then wake the head: the slot this replica freed is then its own
            # head's to take, not whichever replica polls first.
            self._spawn(self._give(lease))
            return
        self.changed()

    async def _give(self, lease: object) -> None:
        assert self.shared is not None
        try:
            await self.shared.give(lease)
        finally:
            self._pump()

    def take(self, cls: str) -> Entry:
        """A slot taken past the queue, for a request another upstream's gate admitted and this one served."""
        entry = self.gate.take(cls, asyncio.get_running_loop().time())
        self.on_change(self)
        return entry

    def changed(self) -> None:
        """L may have moved, or a slot freed: start whoever may start now."""
        if self.shared is None and self._recheck is None and not self.gate.depth:
            # Nobody waits, so nobody starts, and no recheck timer is armed to settle: only the gauges.
            self.on_change(self)
            return
        self._pump()

    def _pump(self) -> None:
        if self.shared is not None:
            if self._pumping is None and self.gate.depth:
                self._pumping = asyncio.get_running_loop().create_task(self._pump_shared())
            self._settle()
            return
        now = asyncio.get_running_loop().time()
        while (entry := self.gate.pop_ready(now)) is not None:
            self._wake(entry)
        self._settle()
        self.on_change(self)

    def _settle(self) -> None:
        """Arm the recheck timer while a slot is free and a waiter waits on a reservation kept for
        arrivals; cancel it otherwise."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        gate, loop = self.gate, asyncio.get_running_loop()
        if gate.depth == 0 or gate.in_flight >= gate.limit:
            return
        lent_in = gate.reserve.lends_in(gate.limit, loop.time())
        if lent_in is not None:
            self._recheck = loop.call_later(min(max(lent_in, 0.0) + 1e-3, RECHECK), self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._pump()

    def _wake(self, entry: Entry) -> None:
        waiter = entry.waiter
        assert isinstance(waiter, asyncio.Future)
        if waiter.done():  # its task was cancelled a moment ago and has not run yet
            self.leave(entry)
        else:
            waiter.set_result(None)

    async def _pump_shared(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (entry := self.gate.pop_ready(loop.time())) is not None:
                if await self._lease(entry):
                    self._wake(entry)
                    continue
                self.gate.unstart(entry)
                self.on_change(self)
                await asyncio.sleep(self.shared_poll)
        finally:
            self._pumping = None
            self._settle()
            self.on_change(self)

    async def _lease(self, entry: Entry) -> bool:
        assert self.shared is not None
        entry.lease = await self.shared.take(self.name, self.gate.limit)
        return entry.lease is not None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self.gate.next_deadline()
        if deadline is None or deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer, self._timer_at = None, float("inf")
        for entry in self.gate.expire(loop.time()):
            waiter = entry.waiter
            assert isinstance(waiter, asyncio.Future)
            if not waiter.done():
                waiter.set_exception(overloaded(Shed("expired", self.gate.retry_after(loop.time()))))
        self._arm(loop)
        self._pump()  # the expired may have held reservations from the others

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for timer in (self._timer, self._recheck):
            if timer is not None:
                timer.cancel()
        for task in [*self._tasks, *([self._pumping] if self._pumping else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
