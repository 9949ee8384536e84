"""A cheap idle timeout for streams: one timer per idle period, not one per chunk.

``asyncio.timeout`` around every chunk would create, schedule and cancel a timer for each token. The
watch instead notes when the stream started waiting; its single timer, when due, re-arms itself for the
new deadline unless the stream has really been waiting that long, and only then cancels the task.
"""

from __future__ import annotations

import asyncio


class IdleWatch:
    """Cancels the current task when one wait lasts ``idle`` seconds, or the stream passes ``deadline``."""

    __slots__ = ("_handle", "_idle", "_loop", "_task", "deadline", "expired", "since")

    def __init__(self, idle: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._idle = idle
        self.deadline = deadline
        self.expired = False
        # When the current wait began (loop time); None between waits. A stream sets it around each wait
        # itself, per chunk: ``waiting()`` and ``received()`` say the same with a call each.
        self.since: float | None = None
        self._handle = self._loop.call_at(min(self._loop.time() + idle, deadline), self._check)

    def waiting(self) -> None:
        self.since = self._loop.time()

    def received(self) -> None:
        self.since = None

    def _check(self) -> None:
        now = self._loop.time()
        since = self.since
        if since is not None and (now - since >= self._idle or now >= self.deadline):
            self.expired = True
            if self._task is not None:
                self._task.cancel()
            return
        base = since if since is not None else now
        self._handle = self._loop.call_at(min(base + self._idle, self.deadline), self._check)

    def absorb(self) -> bool:
        """In an ``except CancelledError``: True (and the cancellation undone) when the watch fired."""
        if self.expired and self._task is not None:
            self._task.uncancel()
        return self.expired

    def close(self) -> None:
        self._handle.cancel()
