"""Stream coalescing: what piled up while the consumer was behind is merged, text of a fast stream waits at
most the pace (on the real event loop, within a generous slack), the first output and anything but text never wait, and the openai SDK
reassembles exactly the same text, reasoning and tool calls whichever point the consumer falls behind at
and wherever a tool call's arguments are split."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from middleware.buffer.coalesce import MAX_DELTAS, PACE, GapMeter, Pending, coalesce, merge, mergeable
from proxy.types import Chunk, Stream, ToolCallDelta, Usage
from proxy.writer import SSEWriter
from tests.middleware.buffer.support import stalling_upstream

TOOL_STREAM = [
    Chunk(role="assistant"),
    Chunk(reasoning="Let me "),
    Chunk(reasoning="think."),
    Chunk(content="The "),
    Chunk(content="weather "),
    Chunk(content="in Paris: "),
    Chunk(tool_calls=(ToolCallDelta(0, id="call_1", name="get_weather", arguments=""),)),
    Chunk(tool_calls=(ToolCallDelta(0, arguments='{"city": '),)),
    Chunk(tool_calls=(ToolCallDelta(0, arguments='"Paris"}'),)),
    Chunk(tool_calls=(ToolCallDelta(1, id="call_2", name="get_time", arguments='{"tz": "CET"}'),)),
    Chunk(content=" and "),
    Chunk(content="more."),
    Chunk(finish_reason="tool_calls"),
    Chunk(usage=Usage(12, 30)),
]


async def source(chunks: list[Chunk], sent: asyncio.Event) -> Stream:
    for chunk in chunks:
        await asyncio.sleep(0)  # one chunk per loop turn, as from a socket
        yield chunk
    sent.set()


async def consume(chunks: list[Chunk], stall_after: int | None, pace: float = 0.0) -> list[Chunk]:
    """Pull the coalesced stream; after ``stall_after`` events, wait until the source has sent everything
    (a client socket backed up at that point). Up to the first output the consumer itself pulls the
    source (nothing is read ahead), so a stall before it waits until the first output has gone."""
    sent = asyncio.Event()
    out: list[Chunk] = []
    stalled = False
    async for event in coalesce(source(chunks, sent), pace=pace):
        out.append(event)
        spoke = any(e.carries_output or e.usage for e in out)
        if stall_after is not None and len(out) >= stall_after and spoke and not stalled:
            stalled = True
            await sent.wait()
    return out


def sdk_final(events: list[Chunk]) -> Any:
    writer = SSEWriter(id="chatcmpl-1", created=0, model="m", include_usage=True)
    state = ChatCompletionStreamState()
    for event in events:
        for frame in writer.render(event).split(b"\n\n"):
            if frame:
                state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(frame[len(b"data: ") :])))
    return state.get_final_completion()


def wire(events: list[Chunk]) -> list[dict[str, Any]]:
    writer = SSEWriter(id="chatcmpl-1", created=0, model="m", include_usage=True)
    return [orjson.loads(f[6:]) for e in events for f in writer.render(e).split(b"\n\n") if f]


@pytest.mark.parametrize("pace", [0.0, 0.01], ids=["no-pace", "paced"])
@pytest.mark.parametrize("stall_after", [None, *range(1, len(TOOL_STREAM))])
async def test_the_sdk_reassembles_the_same_reply_wherever_the_client_falls_behind(
    stall_after: int | None, pace: float
) -> None:
    events = await consume(TOOL_STREAM, stall_after, pace)
    assert sdk_final(events).model_dump() == sdk_final(TOOL_STREAM).model_dump()
    # Tool calls, the finish and usage pass through untouched: byte-identical on the wire.
    original = [e for e in wire(TOOL_STREAM) if not _text_only(e)]
    merged = [e for e in wire(events) if not _text_only(e)]
    assert merged == original


ARGS = '{"city": "Paris", "unit": "celsius"}'


@pytest.mark.parametrize("cut", range(len(ARGS) + 1))
async def test_tool_calls_pass_byte_identical_wherever_their_arguments_are_split(cut: int) -> None:
    """Split at 0 or at the end: the whole call in one delta (plus an empty one)."""
    stream = [
        Chunk(role="assistant", content=""),
        Chunk(content="Checking"),
        Chunk(content=" the"),
        Chunk(content=" weather."),
        Chunk(tool_calls=(ToolCallDelta(0, id="call_1", name="get_weather", arguments=ARGS[:cut]),)),
        Chunk(tool_calls=(ToolCallDelta(0, arguments=ARGS[cut:]),)),
        Chunk(finish_reason="tool_calls"),
        Chunk(usage=Usage(12, 30)),
    ]
    expected = sdk_final(stream).model_dump()
    original = [e for e in wire(stream) if not _text_only(e)]
    for stall_after in (None, *range(1, len(stream))):
        for pace in (0.0, 0.01):
            events = await consume(stream, stall_after, pace)
            assert sdk_final(events).model_dump() == expected
            assert [e for e in wire(events) if not _text_only(e)] == original


def _text_only(event: dict[str, Any]) -> bool:
    if not event["choices"]:
        return False
    choice = event["choices"][0]
    return choice["finish_reason"] is None and set(choice["delta"]) <= {
        "role",
        "content",
        "reasoning_content",
    }


async def test_the_first_output_and_anything_but_text_never_wait_for_the_pace() -> None:
    """With a pace of a minute, anything held for it would time out: the first text, and the text pending
    when a tool call, the finish or usage comes, leave at once."""
    consumer_has_first = asyncio.Event()

    async def upstream() -> Stream:
        yield Chunk(role="assistant", content="")
        yield Chunk(content="first")
        await consumer_has_first.wait()  # nothing more until the first text went out alone
        for i in range(5):
            yield Chunk(content=f" w{i}")
        yield Chunk(tool_calls=(ToolCallDelta(0, id="c", name="f", arguments="{}"),))
        yield Chunk(content=" after")
        yield Chunk(finish_reason="tool_calls")
        yield Chunk(usage=Usage(3, 8))

    events: list[Chunk] = []
    async with asyncio.timeout(10):
        async for event in coalesce(upstream(), pace=60.0):
            events.append(event)
            if event.content == "first":
                consumer_has_first.set()
    assert [e.content for e in events[:2]] == ["", "first"]
    assert events[2].content == " w0 w1 w2 w3 w4"  # merged, and sent with the tool call
    assert events[3].tool_calls and events[4].content == " after"
    assert events[5].finish_reason == "tool_calls" and events[6].usage == Usage(3, 8)


SLACK = 0.05  # seconds a loaded machine may add to any hold: generous, since other work shares the cores


async def timed(upstream: Stream, pace: float) -> list[tuple[Chunk, int, float]]:
    """The real coalescer on the running loop, its consumer keeping up: each event, with the deltas it
    carries and how long the oldest of them waited, as ``on_event`` reports them."""
    reports: list[tuple[int, float]] = []
    events: list[Chunk] = []
    async with asyncio.timeout(30):
        async for event in coalesce(upstream, lambda deltas, held: reports.append((deltas, held)), pace):
            events.append(event)
    assert len(reports) == len(events)
    return [(event, deltas, held) for event, (deltas, held) in zip(events, reports, strict=True)]


def words(n: int) -> list[Chunk]:
    return [Chunk(content=f" w{i}") for i in range(n)]


def text(sent: list[tuple[Chunk, int, float]]) -> str:
    return "".join(event.content or "" for event, _, _ in sent)


async def test_on_a_real_loop_no_delta_waits_much_longer_than_the_pace() -> None:
    """Gaps from none to several paces, at random: every delta arrives, and none waits past the pace
    (plus what a loaded machine adds)."""
    rng = random.Random(13)
    gaps = [rng.choice([0.0, 0.0, 0.002, 0.004, 0.015, 0.03]) for _ in range(150)]

    async def upstream() -> Stream:
        yield Chunk(role="assistant", content="")
        for gap, chunk in zip(gaps, words(len(gaps)), strict=True):
            await asyncio.sleep(gap)
            yield chunk

    sent = await timed(upstream(), PACE)
    assert text(sent) == "".join(c.content or "" for c in words(len(gaps)))
    assert sum(deltas for _, deltas, _ in sent) == len(gaps) + 1
    assert max(held for _, _, held in sent) <= PACE + SLACK


async def test_on_a_real_loop_a_fast_stream_leaves_in_far_fewer_events_each_held_at_most_the_pace() -> None:
    """A chunk per loop turn, with a pace of 50 ms: many deltas per event, none held much past the pace."""

    async def upstream() -> Stream:
        yield Chunk(role="assistant", content="")
        for chunk in words(200):
            await asyncio.sleep(0)
            yield chunk

    sent = await timed(upstream(), 0.05)
    assert text(sent) == "".join(c.content or "" for c in words(200))
    assert len(sent) < 200 / 2
    assert max(held for _, _, held in sent) <= 0.05 + SLACK


async def test_on_a_real_loop_text_pending_when_the_upstream_pauses_leaves_by_the_timer() -> None:
    """Three deltas come at once, then the upstream waits until the consumer has them: only the timer can
    send them (a missing timer would wait for the next chunk, which never comes: the test times out)."""
    got = asyncio.Event()

    async def upstream() -> Stream:
        yield Chunk(role="assistant", content="")
        yield Chunk(content="first")
        for chunk in words(3):
            yield chunk  # no await between them: the reader takes all three in one turn
        await got.wait()
        yield Chunk(finish_reason="stop")

    reports: list[tuple[int, float]] = []
    events: list[Chunk] = []
    async with asyncio.timeout(10):
        async for event in coalesce(upstream(), lambda deltas, held: reports.append((deltas, held))):
            events.append(event)
            if event.content and "w0" in event.content:
                got.set()
    assert [e.content for e in events] == ["", "first", " w0 w1 w2", None]
    assert reports[2][0] == 3 and reports[2][1] <= PACE + SLACK
    assert events[3].finish_reason == "stop"


async def test_on_a_real_loop_a_stream_slower_than_the_pace_is_never_held() -> None:
    """Deltas 300 ms apart with a pace of 200 ms: each leaves alone, well before the pace would be up."""

    async def upstream() -> Stream:
        yield Chunk(role="assistant", content="")
        yield Chunk(content="first")
        for chunk in words(3):
            await asyncio.sleep(0.3)
            yield chunk

    sent = await timed(upstream(), 0.2)
    assert [deltas for _, deltas, _ in sent] == [1] * 5
    assert max(held for _, _, held in sent) < 0.2 - SLACK


def test_a_lagging_loop_is_woken_earlier_by_its_lag_but_never_before_the_pace_began() -> None:
    pending = Pending(PACE, last=0.0)
    pending.add(Chunk(content="a"), 0.001)
    assert pending.wake_at() == PACE  # no lag measured yet: woken when due
    for _ in range(50):
        pending.woke(0.004)
    assert abs(pending.wake_at() - (PACE - 0.004)) < 1e-6
    for _ in range(50):
        pending.woke(1.0)
    assert pending.wake_at() == 0.0  # the lag counts up to the pace itself, no more


async def test_a_consumer_that_keeps_up_gets_every_chunk_as_it_came() -> None:
    events = await consume(TOOL_STREAM, stall_after=None)
    assert events == TOOL_STREAM


async def test_a_consumer_that_falls_behind_gets_fewer_events() -> None:
    text = [Chunk(role="assistant", content="")] + [Chunk(content=f"w{i} ") for i in range(20)]
    events = await consume([*text, Chunk(finish_reason="stop")], stall_after=1)
    assert len(events) == 4  # the role, the first text alone, one merged run, the finish
    assert events[1].content == "w0 "
    assert events[2].content == "".join(f"w{i} " for i in range(1, 20))


def test_a_merge_stops_at_its_size_bound_and_at_anything_but_text() -> None:
    many = deque([Chunk(content="x")] * (MAX_DELTAS + 5))
    assert merge(many).content == "x" * MAX_DELTAS and len(many) == 5
    mixed = deque([Chunk(content="a"), Chunk(reasoning="b"), Chunk(content="c")])
    assert merge(mixed).content == "a" and merge(mixed).reasoning == "b"
    other = deque([Chunk(content="a"), Chunk(content="b", index=1)])
    assert merge(other).content == "a"
    assert not mergeable(Chunk(content="a", finish_reason="stop"))
    assert not mergeable(Chunk(content="a", logprobs={"content": []}))
    assert not mergeable(Chunk(content="a", meta={"load_ms": 1}))
    assert mergeable(Chunk(content="a"))


async def test_an_upstream_error_reaches_the_consumer_after_what_came_before_it() -> None:
    async def failing() -> Stream:
        yield Chunk(content="a")
        yield Chunk(content="b")
        raise RuntimeError("upstream broke")

    got: list[str] = []
    with pytest.raises(RuntimeError, match="upstream broke"):
        async for event in coalesce(failing()):
            got.append(event.content or "")
    assert "".join(got) == "ab"


async def test_closing_the_coalesced_stream_while_the_upstream_waits_closes_it_and_stops_the_reader() -> None:
    """The consumer leaves after the reader took over, while the upstream waits for its next token (the
    reader is inside it): closing cancels the reader first, then closes the upstream; nothing is left."""
    waiting, closed = asyncio.Event(), asyncio.Event()

    stream = coalesce(stalling_upstream(waiting, closed))
    assert [(await anext(stream)).content for _ in range(2)] == ["", "a"]
    async with asyncio.timeout(10):
        await waiting.wait()
    await stream.aclose()
    assert closed.is_set()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_only_fast_upstreams_are_coalesced() -> None:
    meter = GapMeter()
    assert not meter.fast()  # unknown: passed through
    for _ in range(20):
        meter.record(101, 0.2)  # 2 ms between chunks
    assert meter.fast()
    for _ in range(20):
        meter.record(101, 2.0)  # 20 ms between chunks
    assert not meter.fast()
