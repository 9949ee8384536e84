"""Tapped streams: observers see every chunk in order and the end once, however the stream ends, as nested
generators' ``finally`` blocks would; and through the chat route, whose relay loop calls them itself."""

from __future__ import annotations

import httpx
import orjson
import pytest

from proxy.config import parse
from proxy.tap import Tapped, tap
from proxy.types import Chunk, Stream, Usage
from tests.conftest import VLLM_MODEL, running, upstream_for
from tests.fakes.vllm import FakeVLLM


async def chunks(n: int, fail: Exception | None = None) -> Stream:
    for i in range(n):
        yield Chunk(content=f"c{i}")
    if fail is not None:
        raise fail


def watched(stream: Stream, log: list[str], name: str, fails: bool = False) -> Stream:
    async def on_end(finished: bool) -> None:
        log.append(f"{name} end {finished}")
        if fails:
            raise RuntimeError(f"{name} failed")

    return tap(stream, lambda chunk: log.append(f"{name} {chunk.content}"), on_end)


async def test_observers_see_every_chunk_in_order_and_the_end_once_inner_first() -> None:
    log: list[str] = []
    stream = watched(watched(chunks(2), log, "inner"), log, "outer")
    assert type(stream) is Tapped, "the second tap joins the first: one stream, one place"
    assert [c.content async for c in stream] == ["c0", "c1"]
    await stream.aclose()  # after the end: nothing more
    assert log == ["inner c0", "outer c0", "inner c1", "outer c1", "inner end True", "outer end True"]


async def test_a_failing_source_ends_every_observer_unfinished_before_its_error_passes() -> None:
    log: list[str] = []
    stream = watched(chunks(1, ValueError("upstream broke")), log, "a")
    assert (await anext(stream)).content == "c0"
    with pytest.raises(ValueError, match="upstream broke"):
        await anext(stream)
    assert log == ["a c0", "a end False"]


async def test_closing_early_ends_unfinished_even_when_closing_the_source_fails() -> None:
    async def breaks_on_close() -> Stream:
        try:
            yield Chunk(content="a")
            yield Chunk(content="b")
        finally:
            raise RuntimeError("closing failed")

    log: list[str] = []
    stream = watched(breaks_on_close(), log, "a")
    assert (await anext(stream)).content == "a"
    with pytest.raises(RuntimeError, match="closing failed"):
        await stream.aclose()
    assert log == ["a a", "a end False"]


async def test_every_end_runs_when_one_fails_the_later_ones_told_unfinished_and_the_failure_raised() -> None:
    log: list[str] = []
    stream = watched(watched(watched(chunks(0), log, "first"), log, "second", fails=True), log, "third")
    with pytest.raises(RuntimeError, match="second failed"):
        await anext(stream)
    assert log == ["first end True", "second end True", "third end False"]


async def test_a_stream_closed_before_its_first_chunk_still_ends() -> None:
    log: list[str] = []
    stream = watched(chunks(3), log, "a")
    await stream.aclose()
    assert log == ["a end False"]


def test_the_chat_route_calls_the_observers_of_a_tapped_reply_for_every_chunk(vllm: FakeVLLM) -> None:
    """Rate limit and cache both tap the stream: the reply is cached whole (a second request is a hit
    with the same text) and the tokens it used are what its usage said."""
    vllm.reply = "one two three four five"
    cfg = parse(
        {
            "upstreams": {"fake": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "fake", "model": VLLM_MODEL}]}},
            "limits": {"concurrency": 1},
            "buffer": {"enabled": False},
        }
    )
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "count"}],
        "stream": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }

    def text_and_usage(reply: httpx.Response) -> tuple[str, Usage | None]:
        text, usage = "", None
        for line in reply.text.splitlines():
            if line.startswith("data: {"):
                event = orjson.loads(line[6:])
                for choice in event["choices"]:
                    text += choice["delta"].get("content") or ""
                if event.get("usage"):
                    usage = Usage(event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"])
        return text, usage

    with running(cfg) as url:
        first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
        second = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert first.headers["x-fluido-cache"] == "miss" and second.headers["x-fluido-cache"] == "hit"
    assert text_and_usage(first)[0] == text_and_usage(second)[0] == "one two three four five"
    assert text_and_usage(first)[1] == text_and_usage(second)[1] is not None
    assert first.text.endswith("data: [DONE]\n\n") and second.text.endswith("data: [DONE]\n\n")
