"""``asyncio.timeout`` for the per-request path: the same behaviour, as a plain ``with`` block over one timer.

Every request waits under two deadlines (for its body, for its upstream's reply). ``asyncio.timeout`` is
an object with a state machine, two coroutines for ``async with`` and a timer scheduled through
``call_at``: several microseconds each time, a visible share of what a request costs. ``Deadline`` keeps
its behaviour: when the time is up the task is cancelled, and leaving the block turns that cancellation,
and only that one (not one from elsewhere), into ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``with Deadline(seconds):`` (None: no deadline) in a task, around the awaits it bounds."""

    __slots__ = ("_cancelling", "_delay", "_handle", "_task", "expired")

    def __init__(self, delay: float | None) -> None:
        self._delay = delay
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self.expired = False

    def __enter__(self) -> Deadline:
        if self._delay is not None:
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("A deadline must be used inside a task.")
            self._task = task
            self._cancelling = task.cancelling()  # cancellations already asked for are not ours
            self._handle = task.get_loop().call_later(self._delay, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        assert self._task is not None
        self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # As asyncio.timeout: the expiry's cancellation is taken back (uncancel, whatever the block raised);
        # it is a timeout when no other cancellation came since and the block ended cancelled.
        task = self._task
        if (
            self.expired
            and task is not None
            and task.uncancel() <= self._cancelling
            and kind is asyncio.CancelledError
        ):
            raise TimeoutError from exc
