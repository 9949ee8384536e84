"""``DisconnectWatch``: a request's task is cancelled when its client leaves, as the server announces it
(a ``Departure``) or, where the server does not, as a task reading ``receive`` finds out."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.departure import Departure, DisconnectWatch


async def never_read() -> dict[str, Any]:
    raise AssertionError("receive is not read where the server announces departures")


class Request:
    """A request that waits for ``done`` under a watch; ``watching`` is set once the watch is."""

    def __init__(
        self, departure: Departure | None, receive: Any = never_read, finished: bool = False
    ) -> None:
        self.watching = asyncio.Event()
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self.run(departure, receive, finished))

    async def run(self, departure: Departure | None, receive: Any, finished: bool) -> str:
        watch = DisconnectWatch(receive, 0.0, departure)
        watch.finished = finished
        self.watching.set()
        try:
            await self.done.wait()
        except asyncio.CancelledError:
            if watch.absorb():
                return "client gone"
            raise
        finally:
            watch.close()
        return "answered"


async def test_a_departure_cancels_the_request_without_a_task_reading_receive() -> None:
    departure = Departure()
    request = Request(departure)
    await request.watching.wait()
    assert asyncio.all_tasks() == {request.task, asyncio.current_task()}  # no watcher task
    departure.leave()
    assert await request.task == "client gone"


async def test_a_client_that_left_before_the_watch_began_cancels_the_request_at_once() -> None:
    departure = Departure()
    departure.leave()
    assert await Request(departure).task == "client gone"


async def test_a_departure_after_the_request_finished_cancels_nothing() -> None:
    departure = Departure()
    request = Request(departure, finished=True)
    await request.watching.wait()
    departure.leave()
    assert not request.task.cancelling()
    request.done.set()
    assert await request.task == "answered"


async def test_without_a_departure_a_task_reads_receive_for_the_disconnect() -> None:
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    request = Request(None, receive)
    await request.watching.wait()
    assert len(asyncio.all_tasks()) == 3  # the test, the request and its watcher
    disconnect.set()
    assert await request.task == "client gone"
