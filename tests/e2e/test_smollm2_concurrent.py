"""End to end: two users at once on the embedded SmolLM2 (llama-cpp-python, one request at a time). The
server is launched so that a new request never interrupts a running stream, and the buffer holds its one
slot: both answers finish with a finish_reason, and the second one waited in Fluido, not in the server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from proxy.config import parse
from tests.conftest import free_port, running
from tests.middleware.buffer.support import ask

pytestmark = pytest.mark.e2e


async def test_two_concurrent_streams_on_the_embedded_model_both_finish() -> None:
    port = free_port()
    cfg = parse(
        {
            "upstreams": {
                "local": {"kind": "openai", "url": f"http://127.0.0.1:{port}/v1", "embedded": {"n_ctx": 1024}}
            },
            "models": {"chat": {"targets": [{"upstream": "local", "model": "smollm2"}]}},
            "cache": {"enabled": False},
        }
    )
    question = "Name three rivers in Europe and say one thing about each."
    with running(cfg) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            assert (await ask(session, url, "Say hi.", tokens=4)).status == 200  # the server is up
            answers = await asyncio.gather(*(ask(session, url, question, tokens=48) for _ in range(2)))
    assert [a.status for a in answers] == [200, 200]
    assert all(a.finish in ("stop", "length") and a.text.strip() for a in answers)
    assert sum("x-fluido-queue-ms" in a.headers for a in answers) == 1  # one waited its turn in Fluido
