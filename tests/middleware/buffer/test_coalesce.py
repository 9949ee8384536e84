"""Stream coalescing: merged only while the consumer is behind, never holding anything, and the openai SDK
reassembles exactly the same text, reasoning and tool calls whichever point the consumer falls behind at."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from middleware.buffer.coalesce import MAX_DELTAS, GapMeter, coalesce, merge, mergeable
from proxy.types import Chunk, Stream, ToolCallDelta, Usage
from proxy.writer import SSEWriter

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
    (a client socket backed up at that point)."""
    sent = asyncio.Event()
    out: list[Chunk] = []
    async for event in coalesce(source(chunks, sent), lambda n, held: None, pace=pace):
        out.append(event)
        if len(out) == stall_after:
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


def _text_only(event: dict[str, Any]) -> bool:
    if not event["choices"]:
        return False
    choice = event["choices"][0]
    return choice["finish_reason"] is None and set(choice["delta"]) <= {
        "role",
        "content",
        "reasoning_content",
    }


async def test_paced_text_leaves_in_fewer_events_but_the_first_text_and_tool_calls_never_wait() -> None:
    stamps: list[tuple[Chunk, float]] = []
    loop = asyncio.get_running_loop()

    async def fast() -> Stream:
        yield Chunk(role="assistant", content="")
        for i in range(30):
            await asyncio.sleep(0.001)  # 1 ms between tokens
            yield Chunk(content=f"w{i} ")
        yield Chunk(tool_calls=(ToolCallDelta(0, id="c", name="f", arguments="{}"),))
        yield Chunk(finish_reason="tool_calls")

    started = loop.time()
    held: list[float] = []
    async for event in coalesce(fast(), lambda n, h: held.append(h), pace=0.01):
        stamps.append((event, loop.time() - started))
    texts = [(e, t) for e, t in stamps if e.content]
    assert texts[0][0].content == "w0 "  # the first token alone, at once
    assert len(texts) < 30 / 2  # the rest merged
    assert "".join(e.content or "" for e, _ in texts) == "".join(f"w{i} " for i in range(30))
    assert stamps[-2][0].tool_calls and stamps[-1][0].finish_reason == "tool_calls"
    assert max(held) < 0.1  # bounded by the pace (plus the loop's own lag on a busy machine)


async def test_a_consumer_that_keeps_up_gets_every_chunk_as_it_came() -> None:
    events = await consume(TOOL_STREAM, stall_after=None)
    assert events == TOOL_STREAM


async def test_a_consumer_that_falls_behind_gets_fewer_events() -> None:
    text = [Chunk(role="assistant", content="")] + [Chunk(content=f"w{i} ") for i in range(20)]
    events = await consume([*text, Chunk(finish_reason="stop")], stall_after=1)
    assert len(events) == 3  # the first chunk, one merged run, the finish
    assert events[1].content == "".join(f"w{i} " for i in range(20))


def test_a_merge_stops_at_its_size_bound_and_at_anything_but_text() -> None:
    from collections import deque

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


async def test_closing_the_coalesced_stream_closes_the_upstream() -> None:
    closed = asyncio.Event()

    async def endless() -> Stream:
        try:
            while True:
                await asyncio.sleep(0)
                yield Chunk(content="x")
        finally:
            closed.set()

    stream = coalesce(endless())
    assert (await anext(stream)).content
    await stream.aclose()
    assert closed.is_set()


def test_only_fast_upstreams_are_coalesced() -> None:
    meter = GapMeter()
    assert not meter.fast()  # unknown: passed through
    for _ in range(20):
        meter.record(101, 0.2)  # 2 ms between chunks
    assert meter.fast()
    for _ in range(20):
        meter.record(101, 2.0)  # 20 ms between chunks
    assert not meter.fast()
