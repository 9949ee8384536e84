"""``next_chunk``: a stream's next chunk, with a hook awaited only when the stream has to wait for it; while
it waits, the stream is delegated to as ``await`` would (results, cancellation, errors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from proxy.relay import next_chunk
from proxy.types import Chunk

A, B = Chunk(content="a"), Chunk(content="b")


class Hook:
    """Counts its calls; optionally waits itself, or fails."""

    def __init__(self, waits: bool = False, fails: BaseException | None = None) -> None:
        self.calls = 0
        self.waits = waits
        self.fails = fails

    async def __call__(self) -> None:
        self.calls += 1
        if self.waits:
            await asyncio.sleep(0)
        if self.fails is not None:
            raise self.fails


async def test_a_chunk_at_hand_is_returned_without_the_hook() -> None:
    async def stream() -> AsyncGenerator[Chunk, None]:
        yield A
        yield B

    hook, chunks = Hook(), stream()
    assert [await next_chunk(chunks, hook), await next_chunk(chunks, hook)] == [A, B]
    assert hook.calls == 0
    with pytest.raises(StopAsyncIteration):
        await next_chunk(chunks, hook)


@pytest.mark.parametrize("waits", [False, True])
async def test_the_hook_runs_once_before_a_wait_and_the_chunk_still_comes(waits: bool) -> None:
    arrived = asyncio.Event()
    seen_by_hook: list[bool] = []

    async def stream() -> AsyncGenerator[Chunk, None]:
        await arrived.wait()
        await asyncio.sleep(0)  # a second wait: the hook is not run again
        yield A

    hook = Hook(waits=waits)

    async def before_wait() -> None:
        seen_by_hook.append(arrived.is_set())
        await hook()

    asyncio.get_running_loop().call_soon(arrived.set)
    assert await next_chunk(stream(), before_wait) == A
    assert hook.calls == 1 and seen_by_hook == [False]  # it ran while the stream waited, not after


async def test_the_end_of_a_stream_that_waited_is_stop_async_iteration() -> None:
    async def stream() -> AsyncGenerator[Chunk, None]:
        await asyncio.sleep(0)
        return
        yield A  # an async generator with no chunk

    hook = Hook()
    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream(), hook)
    assert hook.calls == 1


async def test_a_cancellation_while_waiting_reaches_the_stream_where_it_waits() -> None:
    events: list[str] = []
    never = asyncio.Event()

    async def stream() -> AsyncGenerator[Chunk, None]:
        try:
            await never.wait()
            yield A
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("closed")

    waiting = asyncio.Event()

    async def before_wait() -> None:
        waiting.set()

    task = asyncio.create_task(next_chunk(stream(), before_wait))  # type: ignore[arg-type]
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["cancelled", "closed"]


async def test_a_failing_hook_is_thrown_into_the_stream_and_reaches_the_caller() -> None:
    events: list[str] = []

    async def stream() -> AsyncGenerator[Chunk, None]:
        try:
            await asyncio.sleep(0)
            yield A
        except ConnectionError:
            events.append("failed")
            raise
        finally:
            events.append("closed")

    with pytest.raises(ConnectionError):
        await next_chunk(stream(), Hook(fails=ConnectionError("client gone")))
    assert events == ["failed", "closed"]


async def test_a_stream_that_errs_after_waiting_raises_its_error() -> None:
    async def stream() -> AsyncGenerator[Chunk, None]:
        await asyncio.sleep(0)
        raise ValueError("upstream broke")
        yield A

    with pytest.raises(ValueError, match="upstream broke"):
        await next_chunk(stream(), Hook())
