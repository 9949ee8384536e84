"""Deadline behaves as asyncio.timeout does: what a block returns or raises, and what its task is left with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import pytest
import uvloop

from proxy.deadline import Deadline

SHORT = 0.01
NEVER = 60.0


def forever() -> Awaitable[Any]:
    return asyncio.Event().wait()


async def cancelled_again() -> None:
    """Waits forever; when cancelled (by the deadline), is cancelled from elsewhere too before leaving."""
    try:
        await forever()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        raise


async def quick() -> str:
    await asyncio.sleep(0)
    return "done"


def with_asyncio(delay: float | None) -> AbstractAsyncContextManager[Any]:
    return asyncio.timeout(delay)


class AsAsync:
    """``Deadline`` behind ``async with``, so one scenario runs under both."""

    def __init__(self, sync: AbstractContextManager[Any]) -> None:
        self.sync = sync

    async def __aenter__(self) -> Any:
        return self.sync.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return self.sync.__exit__(*exc)


def with_deadline(delay: float | None) -> AbstractAsyncContextManager[Any]:
    return AsAsync(Deadline(delay))


async def outcome(
    bound: Callable[[float | None], AbstractAsyncContextManager[Any]],
    delay: float | None,
    work: Callable[[], Awaitable[Any]],
    cancel_from_outside: bool = False,
) -> tuple[str, int]:
    """(what the block ended with, the task's pending cancellations afterwards)."""

    async def run() -> tuple[str, int]:
        task = asyncio.current_task()
        assert task is not None
        try:
            async with bound(delay):
                result = await work()
            ended = f"returned {result}"
        except TimeoutError:
            ended = "TimeoutError"
        except asyncio.CancelledError:
            ended = "CancelledError"
        return ended, task.cancelling()

    task = asyncio.ensure_future(run())
    if cancel_from_outside:
        await asyncio.sleep(0)
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "the task itself cancelled", -1


SCENARIOS = {
    "in time": (NEVER, quick, False, ("returned done", 0)),
    "no deadline": (None, quick, False, ("returned done", 0)),
    "too slow": (SHORT, forever, False, ("TimeoutError", 0)),
    "cancelled from outside first": (NEVER, forever, True, ("CancelledError", 1)),
    "already due": (0.0, forever, False, ("TimeoutError", 0)),
    "cancelled from elsewhere too": (SHORT, cancelled_again, False, ("the task itself cancelled", -1)),
}


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_deadline_ends_a_block_as_asyncio_timeout_does(name: str, loop: str) -> None:
    delay, work, outside, expected = SCENARIOS[name]

    async def both() -> tuple[tuple[str, int], tuple[str, int]]:
        ours = await outcome(with_deadline, delay, work, outside)
        theirs = await outcome(with_asyncio, delay, work, outside)
        return ours, theirs

    ours, theirs = uvloop.run(both()) if loop == "uvloop" else asyncio.run(both())
    assert theirs == expected, "the scenario says what asyncio.timeout does"
    assert ours == theirs


async def test_an_inner_deadline_expiring_is_not_the_outer_ones() -> None:
    async def run(bound: Callable[[float | None], AbstractAsyncContextManager[Any]]) -> str:
        async with bound(NEVER) as outer:
            try:
                async with bound(SHORT):
                    await forever()
            except TimeoutError:
                inner = "inner timed out"
        expired = outer.expired() if callable(outer.expired) else outer.expired
        return f"{inner}, outer expired: {expired}"

    assert await run(with_deadline) == await run(with_asyncio) == "inner timed out, outer expired: False"


def test_a_deadline_outside_a_task_is_refused() -> None:
    with pytest.raises(RuntimeError), Deadline(1.0):
        pass
    with Deadline(None):  # no deadline: nothing to arm, anywhere
        pass
