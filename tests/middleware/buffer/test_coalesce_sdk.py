"""Coalesced streams through Fluido on real sockets: the openai SDK reassembles the same reasoning, text and
tool calls as with coalescing off, from a fast upstream (1 ms between pieces) whose streams are merged."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from proxy.config import Config, parse
from tests.conftest import running
from tests.fakes.vllm import FakeVLLM
from tests.middleware.buffer.support import metric

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }
    for name in ("get_weather", "get_time")
]
CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}},
    {"name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]


def config(fake: FakeVLLM, coalesce: bool) -> Config:
    return parse(
        {
            "upstreams": {"fake": {"kind": "openai", "url": fake.url + "/v1"}},
            "models": {"chat": {"targets": [{"upstream": "fake", "model": MODEL}]}},
            "cache": {"enabled": False},
            "buffer": {"coalesce": coalesce},
        }
    )


async def final(client: AsyncOpenAI, tools: bool) -> dict[str, Any]:
    """The SDK's own reassembly of one stream, without what differs per request (ids, timestamps)."""
    extra: dict[str, Any] = {"tools": TOOLS} if tools else {}
    async with client.chat.completions.stream(
        model="chat", messages=[{"role": "user", "content": "Weather in Paris?"}], **extra
    ) as stream:
        done = await stream.get_final_completion()
    reply = done.model_dump(exclude={"id", "created"})
    for n, call in enumerate(reply["choices"][0]["message"].get("tool_calls") or ()):
        assert call["id"].startswith("chatcmpl-tool-")  # present, as the upstream sent it
        call["id"] = n
    return reply


async def replies(fake: FakeVLLM, coalesce: bool) -> tuple[list[dict[str, Any]], float, float]:
    """Four text streams at once, then four tool-call streams, after one stream that shows the upstream's
    pace; and the coalesced events and the deltas they carried."""
    with running(config(fake, coalesce)) as url:
        client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        fake.tool_calls = None
        await final(client, tools=False)
        got = await asyncio.gather(*(final(client, tools=False) for _ in range(4)))
        fake.tool_calls = CALLS
        got += await asyncio.gather(*(final(client, tools=True) for _ in range(4)))
        await client.close()
        async with aiohttp.ClientSession() as session:
            events = await metric(session, url, 'fluido_stream_events_total{kind="events"}') or 0.0
            deltas = await metric(session, url, 'fluido_stream_events_total{kind="deltas"}') or 0.0
    return got, events, deltas


async def test_the_sdk_reassembles_the_same_reasoning_text_and_tool_calls_with_coalescing_on() -> None:
    fake = FakeVLLM()
    fake.start_in_thread()
    try:
        fake.delay_between = 0.001
        fake.reply = " ".join(f"word{i}" for i in range(300))
        fake.reasoning = " ".join(f"thought{i}" for i in range(60))
        off, off_events, _ = await replies(fake, coalesce=False)
        on, on_events, on_deltas = await replies(fake, coalesce=True)
    finally:
        fake.stop_thread()
    assert on == off
    assert {r["choices"][0]["finish_reason"] for r in on} == {"stop", "tool_calls"}
    assert off_events == 0  # positive control: nothing coalesced with it off
    assert on_deltas > 2 * on_events  # the streams were coalesced: events carried several deltas
