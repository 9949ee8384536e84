"""A fake clock for the buffer's tests: Poisson arrivals on a gate's slots, and an event loop whose time
jumps to its next timer whenever nothing is ready (so timers fire at once, in order, without sleeping)."""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from middleware.buffer.queue import STARTED, Entry, Gate


def poisson(
    g: Gate,
    seconds: float,
    rate: float,
    draw: Callable[[random.Random], str],
    hold: Mapping[str, float],
    budgets: Mapping[str, float],
    seed: int = 1,
    after: Callable[[float], None] = lambda now: None,
) -> list[Entry]:
    """Poisson arrivals at ``rate`` for ``seconds`` on the gate's slots, of the class ``draw`` picks, each
    holding its slot ``hold[cls]``; runs on until every started request has finished. Returns the admitted
    entries; ``after(now)`` runs after every event, once the queue has started whom it may."""
    rng = random.Random(seed)
    now, ends, admitted = 0.0, list[tuple[float, Entry]](), list[Entry]()
    next_arrival = rng.expovariate(rate)
    while now < seconds or ends:
        next_end = min((t for t, _ in ends), default=float("inf"))
        now = min(next_end, next_arrival if now < seconds else float("inf"))
        g.expire(now)
        if now == next_end:
            done = min(ends, key=lambda pair: pair[0])
            ends.remove(done)
            g.finish(done[1], now)
        else:
            next_arrival = now + rng.expovariate(rate)
            cls = draw(rng)
            got = g.arrive(cls, budgets[cls], now)
            if isinstance(got, Entry):
                admitted.append(got)
                if got.state == STARTED:
                    ends.append((now + hold[cls], got))
        while (started := g.pop_ready(now)) is not None:
            ends.append((now + hold[started.cls], started))
        after(now)
    return admitted


class _JumpingSelector(selectors.BaseSelector):
    """A real selector that, when nothing is ready, moves the clock on by the loop's timeout instead of
    waiting it out."""

    def __init__(self, start: float) -> None:
        self.real = selectors.DefaultSelector()
        self.clock = start

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self.real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self.real.unregister(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self.real.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise RuntimeError("nothing ready and no timer armed: the awaited never happens")
        self.clock += timeout
        return []

    def get_map(self) -> Any:
        return self.real.get_map()

    def close(self) -> None:
        self.real.close()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on a fake clock starting at ``start``."""

    def __init__(self, start: float = 0.0) -> None:
        self._jumping = _JumpingSelector(start)
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.clock


def run_virtual(scenario: Coroutine[Any, Any, None], start: float = 0.0) -> None:
    """Run ``scenario`` to its end on a ``VirtualLoop`` whose clock starts at ``start``."""
    loop = VirtualLoop(start)
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.close()
