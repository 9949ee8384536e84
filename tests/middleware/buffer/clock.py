"""A fake clock for the buffer's tests: Poisson arrivals on a gate's slots, and an event loop whose time
jumps to its next timer whenever nothing is ready (so timers fire at once, in order, without sleeping)."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


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
