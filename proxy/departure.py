"""A client that leaves before its answer is complete: the server's word of it (``Departure``) and the
request's reaction (``DisconnectWatch`` cancels the request's task, so the upstream call stops too)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive

# Most whole replies from a fast upstream (or the cache) are done within this: they never pay for a
# watcher task. A client that leaves sooner is noticed when the watcher starts, since the disconnect waits
# for it. Streams are watched from the start: a client that leaves one must stop it at once.
WATCH_DELAY_SECONDS = 0.05

# The scope key of a ``Departure``, an extension of Fluido's HTTP protocol (``proxy.http_protocol``).
DEPARTURE = "fluido.departure"


class Departure:
    """The server's word that the client left before its response was complete: it runs the callbacks
    then, so a request needs no task reading ``receive`` to find out (one task less per stream)."""

    __slots__ = ("_callbacks", "left")

    def __init__(self) -> None:
        self.left = False
        self._callbacks: list[Callable[[], None]] = []

    def on_leave(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the client leaves; at once if it has left already."""
        if self.left:
            callback()
        else:
            self._callbacks.append(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        """Stop listening: a finished request is not kept alive (in a reference cycle through its scope)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def leave(self) -> None:
        """Called by the server when the connection is lost mid-response."""
        if not self.left:
            self.left = True
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()


class DisconnectWatch:
    """Cancels the request's task the moment its client disconnects, so the upstream call stops too.

    Start it once the body is read: from then on the only message ``receive`` can deliver is the
    disconnect. Mark it ``finished`` before the last send, so a disconnect after that cancels nothing.
    Where the server announces departures (``departure``), it only listens; otherwise a task watches
    ``receive``, and with a ``delay`` that task starts only if the request is still going by then.
    """

    __slots__ = ("_departure", "_receive", "_start", "_task", "_watcher", "finished", "gone")

    def __init__(self, receive: Receive, delay: float = 0.0, departure: Departure | None = None) -> None:
        self.gone = False
        self.finished = False
        self._task = asyncio.current_task()
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._start: asyncio.TimerHandle | None = None
        self._departure = departure
        if departure is not None:
            departure.on_leave(self._left)
        elif delay > 0:
            self._start = asyncio.get_running_loop().call_later(delay, self._begin)
        else:
            self._begin()

    def _begin(self) -> None:
        if not self.finished:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left()

    def _left(self) -> None:
        if not self.finished and self._task is not None:
            self.gone = True
            self._task.cancel()

    def absorb(self) -> bool:
        """In an ``except CancelledError``: True (and the cancellation undone) when the client left."""
        if self.gone and self._task is not None:
            self._task.uncancel()
        return self.gone

    def close(self) -> None:
        self.finished = True
        if self._departure is not None:
            self._departure.forget(self._left)
        if self._start is not None:
            self._start.cancel()
        if self._watcher is not None:
            # Let go of the task: its cancellation's traceback holds ``_watch``'s frame, and so this watch,
            # a reference cycle that would keep the whole request alive until a garbage collection.
            watcher = self._watcher
            self._watcher = None
            watcher.cancel()
