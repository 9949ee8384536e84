"""Stream coalescing: what piled up while the consumer was behind is merged, text of a fast stream waits at
most the pace (on a fake clock), the first output and anything but text never wait, and the openai SDK
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


def simulate(
    arrivals: list[tuple[float, Chunk]], pace: float = PACE, lag: float = 0.0
) -> list[tuple[float, Chunk, float]]:
    """The coalescer's hand-over on a fake clock, after the first output left at time 0: the reader adds
    each chunk when it arrives and wakes the consumer when it is urgent, or sets the timer to its wake
    time; the consumer runs ``lag`` after being woken and sends what is due. (time, event, how long its
    oldest delta waited)."""
    pending = Pending(pace, last=0.0)
    queue = deque(arrivals)
    sent: list[tuple[float, Chunk, float]] = []
    timer: float | None = None
    runs: float | None = None  # when the woken consumer runs
    while queue or pending.chunks:
        candidates = [t for t in (queue[0][0] if queue else None, timer, runs) if t is not None]
        now = min(candidates)
        if runs is not None and now == runs:
            pending.woke(lag)
            runs = None
            while pending.chunks and pending.wake_at() <= now + 0.001:
                event, _, held = pending.take(now)
                sent.append((now, event, held))
            timer = pending.wake_at() if pending.chunks else None
        elif timer is not None and now == timer:
            timer, runs = None, now + lag
        else:
            at, chunk = queue.popleft()
            pending.add(chunk, at)
            if not queue:
                pending.finished = True
            if runs is None:  # the consumer is waiting
                if pending.urgent(at):
                    timer, runs = None, at + lag
                elif timer is None:
                    timer = pending.wake_at()
    return sent


def text_at(times: list[float]) -> list[tuple[float, Chunk]]:
    return [(t, Chunk(content=f" w{i}")) for i, t in enumerate(times)]


def test_on_a_fake_clock_no_delta_waits_longer_than_the_pace() -> None:
    rng = random.Random(13)
    for _ in range(200):
        times, t = [], 0.0
        for _ in range(rng.randint(1, 120)):
            t += rng.choice([0.0, rng.uniform(0, 0.004), rng.uniform(0, 0.03), rng.uniform(0, 0.2)])
            times.append(t)
        sent = simulate(text_at(times))
        assert max(held for _, _, held in sent) <= PACE + 1e-9
        assert "".join(e.content or "" for _, e, _ in sent) == "".join(f" w{i}" for i in range(len(times)))


def test_on_a_fake_clock_a_stream_at_2_ms_leaves_in_at_least_4x_fewer_events() -> None:
    sent = simulate(text_at([0.002 * (i + 1) for i in range(199)]))
    assert len(sent) <= 199 / 4
    assert max(held for _, _, held in sent) <= PACE + 1e-9


def test_on_a_fake_clock_a_stream_at_20_ms_is_never_held() -> None:
    sent = simulate(text_at([0.02 * (i + 1) for i in range(50)]))
    assert len(sent) == 50 and all(held == 0.0 for _, _, held in sent)


def test_on_a_fake_clock_text_pending_when_the_stream_pauses_leaves_by_the_timer() -> None:
    sent = simulate([*text_at([0.001, 0.002, 0.003]), (5.0, Chunk(finish_reason="stop"))])
    assert sent[0][0] == PACE and sent[0][1].content == " w0 w1 w2"  # the pace after the last event
    assert sent[1][0] == 5.0 and sent[1][1].finish_reason == "stop"


def test_on_a_fake_clock_anything_but_text_flushes_what_is_pending_and_waits_for_nothing() -> None:
    call = Chunk(tool_calls=(ToolCallDelta(0, id="c", name="f", arguments="{}"),))
    sent = simulate([*text_at([0.001, 0.002]), (0.003, call), (0.0035, Chunk(content=" more")),
                     (0.004, Chunk(finish_reason="tool_calls")), (0.0045, Chunk(usage=Usage(1, 2)))])  # fmt: skip
    assert [(t, e) for t, e, _ in sent] == [
        (0.003, Chunk(content=" w0 w1")),
        (0.003, call),  # the very chunk, untouched
        (0.004, Chunk(content=" more")),
        (0.004, Chunk(finish_reason="tool_calls")),
        (0.0045, Chunk(usage=Usage(1, 2))),
    ]


def test_on_a_fake_clock_a_lagging_loop_is_woken_earlier_by_its_lag() -> None:
    """The consumer runs 4 ms after each wake-up: the coalescer learns it and wakes it earlier, so after a
    few events the holds are back within the pace."""
    times = [0.002 * (i + 1) for i in range(400)]
    sent = simulate(text_at(times), lag=0.004)
    assert max(held for _, _, held in sent) <= PACE + 0.004 + 1e-9
    assert max(held for _, _, held in sent[len(sent) // 2 :]) <= PACE + 0.0005
    positive_control = simulate(text_at(times), lag=0.004, pace=PACE)
    assert positive_control == sent  # deterministic


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
