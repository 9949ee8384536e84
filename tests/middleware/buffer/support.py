"""Plumbing for the buffer's integration tests: the capacity fake, a config in front of it, a stream client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from proxy.config import Config, parse
from proxy.types import Chunk, Stream
from tests.fakes.capacity import FakeCapacity

MODEL = "capacity-model"
SHORT = "What is the capital of France?"  # the classifier's "short"
LONG = "Write an essay of 1000 words about rivers."  # the classifier's "long"


@contextmanager
def capacity(slots: int, mode: str = "llamacpp", **timings: Any) -> Iterator[FakeCapacity]:
    fake = FakeCapacity(slots, mode=mode, **timings)
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


def buffer_config(fake: FakeCapacity, buffer: dict[str, Any] | None = None, **sections: Any) -> Config:
    """One alias ("chat") on the fake; the response cache off, so every request reaches the buffer."""
    kind, url = ("ollama", fake.url) if fake.mode == "ollama" else ("openai", fake.url + "/v1")
    return parse(
        {
            "upstreams": {"fake": {"kind": kind, "url": url}},
            "models": {"chat": {"targets": [{"upstream": "fake", "model": MODEL}]}},
            "cache": {"enabled": False},
            "buffer": buffer or {},
            **sections,
        }
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any = None
    text: str = ""
    finish: str | None = None
    first_token: float | None = None  # seconds from the request
    events: list[Any] = field(default_factory=list)


async def ask(
    session: aiohttp.ClientSession,
    url: str,
    prompt: str = SHORT,
    tokens: int = 5,
    stream: bool = True,
    headers: dict[str, str] | None = None,
) -> Answer:
    body = {"model": "chat", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens}
    body["stream"] = stream
    t0 = time.monotonic()
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        answer = Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()})
        if resp.status != 200 or not stream:
            answer.body = orjson.loads(await resp.read())
            return answer
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = orjson.loads(line[6:])
            answer.events.append(event)
            for choice in event.get("choices", []):
                if choice["delta"].get("content"):
                    answer.first_token = answer.first_token or time.monotonic() - t0
                    answer.text += choice["delta"]["content"]
                answer.finish = choice.get("finish_reason") or answer.finish
        return answer


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float | None:
    """One sample's value from Fluido's /metrics (the first line starting with ``name``)."""
    async with session.get(url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return None


def metric_is(
    session: aiohttp.ClientSession, url: str, name: str, value: float
) -> Callable[[], Awaitable[bool]]:
    """A check for ``until``: the metric has reached ``value``."""

    async def check() -> bool:
        return await metric(session, url, name) == value

    return check


async def stalling_upstream(waiting: asyncio.Event, closed: asyncio.Event) -> Stream:
    """A stream that sends its role and one token, sets ``waiting``, then never sends the next token;
    ``closed`` is set when it is closed."""
    try:
        yield Chunk(role="assistant", content="")
        yield Chunk(content="a")
        waiting.set()
        await asyncio.Event().wait()  # the next token never comes
        yield Chunk(content="never")
    finally:
        closed.set()
