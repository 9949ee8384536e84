"""Stream coalescing: fewer, larger SSE events while the client side is behind, and nothing held otherwise.

A reader task pulls the upstream's chunks as they come; the consumer (the route writing to the client)
takes whatever has piled up since its last write: when the client socket is backed up, or the process is
busy with many streams, the chunks that arrived meanwhile leave as one event. Consecutive text-only deltas
of the same choice (and kind: content or reasoning) are merged at the JSON level, up to ``MAX_DELTAS``
deltas or ``MAX_BYTES`` characters. Beyond that, text waits for a pace of ``PACE`` (10 ms, under one
display frame) between events, so a stream at 2 ms per token leaves in events of about five tokens. The
first text is never held, and a tool-call delta, finish reason, usage, logprobs or error ends the wait at
once: they pass through unmerged, in order, with whatever text was pending sent just before them.

The reader task costs a little per chunk, so it runs only for streams from an upstream whose tokens come
faster than ``FAST_GAP`` apart (measured over its recent streams), where merging pays. Every other stream is
passed through untouched. The reader is the only task that iterates the upstream stream, so the router's
idle watch (which cancels the task iterating it) stays attached to one task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from proxy.types import Chunk, Stream

FAST_GAP = 0.005  # seconds between chunks below which an upstream's streams are coalesced
PACE = 0.01  # seconds: text events of a coalesced stream leave at most this often after the first
MAX_DELTAS = 32  # deltas merged into one event at most
MAX_BYTES = 4096  # characters merged into one event at most
MAX_PENDING = 64  # chunks read ahead of a slow consumer before the reader waits (backpressure)


def mergeable(chunk: Chunk) -> bool:
    """A text-only delta: content or reasoning (not both), nothing else."""
    return (
        (chunk.content is None) != (chunk.reasoning is None)
        and not chunk.tool_calls
        and chunk.finish_reason is None
        and chunk.usage is None
        and chunk.logprobs is None
        and not chunk.meta
    )


def merge(pending: deque[Chunk]) -> Chunk:
    """Take the next event off ``pending``: one chunk, or a run of mergeable ones joined."""
    first = pending.popleft()
    if not mergeable(first) or not pending or not mergeable(pending[0]):
        return first
    field = "content" if first.content is not None else "reasoning"
    parts = [getattr(first, field)]
    size = len(parts[0])
    while pending and len(parts) < MAX_DELTAS and size < MAX_BYTES:
        nxt = pending[0]
        text = getattr(nxt, field)
        if not mergeable(nxt) or text is None or nxt.index != first.index or nxt.role is not None:
            break
        pending.popleft()
        parts.append(text)
        size += len(text)
    if len(parts) == 1:
        return first
    text = "".join(parts)
    # A mergeable chunk has nothing else that a merged one could keep (dataclasses.replace costs more).
    if field == "content":
        return Chunk(first.index, first.role, content=text)
    return Chunk(first.index, first.role, reasoning=text)


async def coalesce(
    stream: Stream,
    on_event: Callable[[int, float], None] = lambda deltas, held: None,
    pace: float = PACE,
) -> Stream:
    """``stream`` re-chunked as above. ``on_event(deltas, held)``: per event sent, how many deltas it
    carries and how long its oldest one waited in this buffer. ``pace``: once the first text has gone
    out, text deltas leave at most this often (0: only what piled up is merged)."""
    loop = asyncio.get_running_loop()
    pending: deque[Chunk] = deque()
    arrived: deque[float] = deque()
    ready = asyncio.Event()  # something to take, or the end
    room = asyncio.Event()  # the reader may read on
    room.set()
    failure: list[BaseException] = []
    finished = False
    pacing = False  # the consumer waits out the pace: only what ends that wait needs to wake it

    async def read() -> None:
        nonlocal finished
        try:
            async for chunk in stream:
                pending.append(chunk)
                arrived.append(loop.time())
                # Waking the consumer for every token while it waits for the pace would cost a task
                # switch per token for nothing: it is woken for what ends the wait, or by its timer.
                if not pacing or len(pending) >= MAX_DELTAS or not mergeable(chunk):
                    ready.set()
                if len(pending) >= MAX_PENDING:
                    room.clear()
                    await room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the upstream's error reaches the consumer after what came before it
            failure.append(exc)
        finally:
            finished = True
            ready.set()

    def text_run() -> bool:
        """Only mergeable text is pending, and not yet a full event of it."""
        return len(pending) < MAX_DELTAS and all(map(mergeable, pending))

    reader = loop.create_task(read())
    spoken = False  # the first text has gone out: from then on, text may wait for the pace
    last = 0.0
    try:
        while True:
            if not pending:
                if finished:
                    break
                ready.clear()
                await ready.wait()
                continue
            due = last + pace
            while spoken and not finished and text_run() and loop.time() < due:
                ready.clear()
                pacing = True
                timer = loop.call_at(due, ready.set)
                try:
                    await ready.wait()
                finally:
                    pacing = False
                    timer.cancel()
            before = len(pending)
            oldest = arrived[0]
            event = merge(pending)
            taken = before - len(pending)
            for _ in range(taken):
                arrived.popleft()
            room.set()
            last = loop.time()
            on_event(taken, last - oldest)
            spoken = spoken or bool(event.content or event.reasoning)
            yield event
        if failure:
            raise failure[0]
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await stream.aclose()


class GapMeter:
    """The recent gap between chunks of one upstream's streams (EWMA), to decide whether to coalesce."""

    __slots__ = ("gap",)

    def __init__(self) -> None:
        self.gap: float | None = None  # unknown: pass streams through until one was measured

    def fast(self) -> bool:
        return self.gap is not None and self.gap < FAST_GAP

    def record(self, chunks: int, seconds: float) -> None:
        """A stream sent ``chunks`` chunks over ``seconds``."""
        if chunks > 1:
            gap = seconds / (chunks - 1)
            self.gap = gap if self.gap is None else self.gap * 0.8 + gap * 0.2
