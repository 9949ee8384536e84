"""Stream coalescing: fewer, larger SSE events for fast upstreams, each delta held at most ``PACE``.

Up to its first output (text, reasoning, a tool call or the finish) a stream passes straight through in
the consumer's own task (the route writing to the client), exactly as without coalescing: the first token
is never held, not even for a hand-over between tasks. From then on a reader task pulls the upstream's
chunks as they come and the consumer takes what is due. Consecutive text-only deltas of the same choice
(and kind: content or reasoning) are merged at the JSON level, up to ``MAX_DELTAS`` deltas or
``MAX_BYTES`` characters. Two things merge them:

- what piled up while the consumer was behind (its client socket backed up, so the write waited, or the
  process busy with other streams) leaves as one event, which adds no delay at all;
- text is due ``PACE`` (10 ms, under one display frame) after the previous event left, or after it arrived
  itself if it had been waiting before that: so a stream at 2 ms per token leaves in events of about five
  tokens, no delta waits longer than ``PACE``, and a stream slower than ``PACE`` is never held.

A tool-call delta, finish reason, usage, logprobs or error is due at once: they pass through unmerged, in
order, with whatever text was pending sent just before them.

The pace is kept by the reader, not by a timer per delta: each arriving delta checks the due time and wakes
the consumer when the next delta (expected one recent gap later) would come too late; one timer per event
covers an upstream that pauses. The consumer thus wakes once per event, not once per delta. A woken
consumer runs one turn of the event loop later, and on a busy loop that turn is what a delta waits beyond
the pace: the coalescer measures it (from the wake-up to the consumer running) and wakes the consumer that
much earlier, up to the pace itself.

The reader task costs a little per chunk, so it runs only for streams from an upstream whose tokens come
faster than ``FAST_GAP`` apart (measured over its recent streams), where merging pays. Every other stream is
passed through untouched. The reader is the only task that iterates the upstream stream past its first
output, which the router has read before the chain returns (its head); so the router's idle watch (which
cancels the task iterating the stream, set up after the head) binds to the reader.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from proxy.types import Chunk, Stream

FAST_GAP = 0.005  # seconds between chunks below which an upstream's streams are coalesced
PACE = 0.01  # seconds: after the first output, text is due this long after the last event, at most
MAX_DELTAS = 32  # deltas merged into one event at most
MAX_BYTES = 4096  # characters merged into one event at most
MAX_PENDING = 64  # chunks read ahead of a slow consumer before the reader waits (backpressure)
TIMER_SLACK = 0.001  # seconds: event-loop timers may fire this much early (libuv counts milliseconds)


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


def merge(pending: deque[Chunk], all_text: bool = False) -> Chunk:
    """Take the next event off ``pending``: one chunk, or a run of mergeable ones joined. ``all_text``:
    every pending chunk is known to be mergeable, so none is asked again."""
    first = pending.popleft()
    if not pending or not (all_text or (mergeable(first) and mergeable(pending[0]))):
        return first
    field = "content" if first.content is not None else "reasoning"
    parts = [getattr(first, field)]
    size = len(parts[0])
    while pending and len(parts) < MAX_DELTAS and size < MAX_BYTES:
        nxt = pending[0]
        text = getattr(nxt, field)
        if text is None or nxt.index != first.index or nxt.role is not None:
            break
        if not (all_text or mergeable(nxt)):
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


class Pending:
    """What the reader has read and the consumer not yet sent, with when each chunk arrived, and the rule
    for when it is due. Sans-IO: the caller passes the time."""

    __slots__ = ("arrived", "chunks", "finished", "gap", "lag", "last", "pace", "seen", "solid")

    def __init__(self, pace: float = PACE, last: float = 0.0) -> None:
        self.pace = pace
        self.chunks: deque[Chunk] = deque()
        self.arrived: deque[float] = deque()
        self.solid = 0  # pending chunks that are not mergeable text: each is due at once
        self.finished = False  # the upstream ended (or failed): everything is due
        self.last = last  # when the last event left
        self.gap = 0.0  # recent time between this stream's chunks (EWMA)
        self.seen: float | None = None  # when the last chunk arrived
        self.lag = 0.0  # recent time from waking the consumer to its running (EWMA): the loop's lag

    def add(self, chunk: Chunk, now: float) -> None:
        if self.seen is not None:
            self.gap = self.gap * 0.75 + (now - self.seen) * 0.25
        self.seen = now
        self.chunks.append(chunk)
        self.arrived.append(now)
        self.solid += not mergeable(chunk)

    def due_at(self) -> float:
        """When the pending chunks are due (there are some): text ``pace`` after the last event, or after
        its own arrival if it waited before that; anything else at once."""
        if self.finished or self.solid or len(self.chunks) >= MAX_DELTAS:
            return 0.0
        return min(self.last, self.arrived[0]) + self.pace

    def wake_at(self) -> float:
        """When to wake the consumer so that it runs when they are due: the loop's lag earlier."""
        return self.due_at() - min(self.lag, self.pace)

    def urgent(self, now: float) -> bool:
        """Wake the consumer now: the next chunk, one recent gap away, would come after the wake time.

        ``wake_at()`` written out: this runs for every chunk the consumer waits for."""
        if self.finished or self.solid or len(self.chunks) >= MAX_DELTAS:
            due = 0.0
        else:
            last, first = self.last, self.arrived[0]
            due = (last if last < first else first) + self.pace
        lag, pace = self.lag, self.pace
        return now + self.gap > due - (lag if lag < pace else pace)

    def woke(self, lag: float) -> None:
        self.lag = self.lag * 0.75 + lag * 0.25

    def take(self, now: float) -> tuple[Chunk, int, float]:
        """The next event, how many deltas it carries, and how long the oldest of them waited."""
        before, held = len(self.chunks), now - self.arrived[0]
        event = merge(self.chunks, not self.solid)
        deltas = before - len(self.chunks)
        for _ in range(deltas):
            self.arrived.popleft()
        self.solid -= not mergeable(event)
        self.last = now
        return event, deltas, held


async def coalesce(
    stream: Stream,
    on_event: Callable[[int, float], None] = lambda deltas, held: None,
    pace: float = PACE,
) -> Stream:
    """``stream`` re-chunked as above. ``on_event(deltas, held)``: per event sent, how many deltas it
    carries and how long the oldest of them waited in this buffer (from its arrival here to its hand-over to
    the writer, which writes it in that same step): the longest any of them waited. ``pace``: once the
    first output has gone out, text deltas leave at most this often (0: only what piled up is merged).

    However it ends (the upstream's end or error, or the consumer closing it), the reader is cancelled and
    waited for before ``stream`` is closed: a stream cannot be closed while another task iterates it."""
    loop = asyncio.get_running_loop()
    reader: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None  # wakes the consumer when held text falls due
    try:
        # Up to the first output, chunks pass straight through in the consumer's own task: no hand-over,
        # so the first token leaves exactly as without coalescing. The router has read them already (its
        # head), so this waits on nothing and the router's idle watch, set up after the head, binds to the
        # reader.
        async for chunk in stream:
            if chunk.carries_output or chunk.usage is not None:
                first = chunk
                break
            on_event(1, 0.0)
            yield chunk
        else:
            return
        pending = Pending(pace, loop.time())
        waiter: asyncio.Future[None] | None = None  # the consumer waits for something due
        woken = 0.0  # when the consumer was woken
        room: asyncio.Future[None] | None = None  # the reader waits for the consumer to catch up
        failure: list[BaseException] = []

        def wake() -> None:
            nonlocal timer, woken
            if timer is not None:
                timer.cancel()
                timer = None
            if waiter is not None and not waiter.done():
                woken = loop.time()
                waiter.set_result(None)

        def arm() -> None:
            nonlocal timer
            if timer is None:
                timer = loop.call_at(pending.wake_at(), wake)

        async def read() -> None:
            nonlocal room
            try:
                async for chunk in stream:
                    now = loop.time()
                    pending.add(chunk, now)
                    if waiter is not None and not waiter.done():
                        if pending.urgent(now):
                            wake()
                        elif timer is None:
                            arm()
                    if len(pending.chunks) >= MAX_PENDING:
                        room = loop.create_future()
                        await room
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the upstream's error reaches the consumer after what came before
                failure.append(exc)
            finally:
                pending.finished = True
                wake()

        reader = loop.create_task(read())  # it reads ahead while the first output is being written
        on_event(1, 0.0)
        yield first
        pending.last = loop.time()
        while True:
            now = loop.time()
            if pending.chunks and pending.wake_at() <= now + TIMER_SLACK:
                event, deltas, held = pending.take(now)
                if room is not None and not room.done():
                    room.set_result(None)
                on_event(deltas, held)
                yield event
                continue
            if pending.finished and not pending.chunks:
                break
            waiter = loop.create_future()
            if pending.chunks:
                arm()
            try:
                await waiter
            finally:
                waiter = None
            pending.woke(loop.time() - woken)
        if failure:
            raise failure[0]
    finally:
        if reader is not None:
            reader.cancel()
            # wait(), not await: the reader's own cancellation is not ours to raise, and ours (if this task
            # is cancelled meanwhile) is not swallowed.
            await asyncio.wait([reader])
        if timer is not None:
            timer.cancel()
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
