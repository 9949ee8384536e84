"""The buffer link gives a stream's slot back however the stream ends: a client that leaves mid-stream of
a coalesced stream, while the upstream is blocked waiting for its next token, frees the upstream slot and
the rate-limit concurrency slot, and the upstream stream is closed with no task left reading it. And what
it teaches the controller: a stream's TTFT, a reply's whole time."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from middleware.buffer import build_buffer
from proxy.app_parts import build_upstreams
from proxy.config import parse
from proxy.parsing import parse_chat
from proxy.types import Call, Choice, Chunk, Completion, Message, Reply, Stream, Trace, Usage
from tests.conftest import VLLM_MODEL, running, upstream_for
from tests.fakes.vllm import FakeVLLM
from tests.middleware.buffer.support import stalling_upstream

CONFIG = {
    "upstreams": {"fake": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},
    "models": {"chat": {"targets": [{"upstream": "fake", "model": "m"}]}},
    "cache": {"enabled": False},
    "buffer": {"coalesce": True, "upstreams": {"fake": {"parallel": 2, "adaptive": False}}},
}


async def test_a_consumer_closing_a_coalesced_stream_mid_way_frees_the_slot_and_closes_the_upstream() -> None:
    cfg = parse(CONFIG)
    upstreams = build_upstreams(cfg)
    breakers = {name: up.breaker for name, up in upstreams.items()}
    parts = build_buffer(cfg.buffer, cfg.upstreams, cfg.models, breakers, None, None)
    buffer, admission = parts.buffer, parts.admissions["fake"]
    buffer.meters["fake"].gap = 0.001  # a fast upstream: its streams are coalesced
    blocked, closed = asyncio.Event(), asyncio.Event()
    events: list[int] = []
    buffer.observe_event = lambda deltas, held: events.append(deltas)

    entry = await admission.enter("short", 5.0)
    assert admission.gate.in_flight == 1
    stream = buffer._hold(stalling_upstream(blocked, closed), admission, entry, "fake")
    assert [(await anext(stream)).content for _ in range(2)] == ["", "a"]
    async with asyncio.timeout(10):
        await blocked.wait()  # read by the coalescer's reader task, which now waits on the upstream
    assert len(events) == 2, "the stream went through the coalescer"
    await stream.aclose()
    assert closed.is_set(), "the upstream stream was closed"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert admission.gate.in_flight == 0


def test_clients_leaving_coalesced_streams_leave_the_upstream_and_rate_limit_slots_free(
    vllm: FakeVLLM,
) -> None:
    """One slot upstream (L = 1) and one concurrent request per client: after each of L + 1 clients that
    left mid-stream, the next request is still served. The fast streams before each leaving one keep the
    upstream's measured pace under the coalescing threshold, so it is coalesced. (Here the client's leaving
    cancels the route while it waits inside the coalescer; closing it between events is the case above.)"""
    cfg = parse(
        {
            "upstreams": {"fake": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "fake", "model": VLLM_MODEL}]}},
            "cache": {"enabled": False},
            "buffer": {"coalesce": True, "upstreams": {"fake": {"parallel": 1, "adaptive": False}}},
            "limits": {"concurrency": 1},
        }
    )
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    vllm.reply = " ".join(["word"] * 20)
    with running(cfg) as url:
        for _ in range(2):
            vllm.delay_between = 0.0
            for _ in range(5):  # fast streams, each served in full
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as reply:
                    assert reply.status_code == 200 and "[DONE]" in reply.read().decode()
            vllm.delay_between = 60.0  # after its first piece, the upstream stalls
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as reply:
                assert reply.status_code == 200
                lines = reply.iter_lines()  # kept: dropping the iterator would close the connection here
                assert any("word" in line for line in lines)  # mid-stream; then the client leaves
                lines.close()
        vllm.delay_between = 0.0
        served = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, timeout=10)
        assert served.status_code == 200


async def test_replies_that_are_not_streamed_teach_the_controller_their_whole_time() -> None:
    cfg = parse({**CONFIG, "buffer": {"upstreams": {"fake": {"parallel": 2}}}})
    upstreams = build_upstreams(cfg)
    breakers = {name: up.breaker for name, up in upstreams.items()}
    parts = build_buffer(cfg.buffer, cfg.upstreams, cfg.models, breakers, None, None)
    controller = parts.admissions["fake"].gate.controller

    def call() -> Call:
        body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
        return Call(parse_chat(orjson.dumps(body)), Trace("id", "127.0.0.1", "/v1/chat/completions", 0.0))

    async def reply(c: Call) -> Reply:
        c.trace.upstream_ms = 400.0
        message = Message(role="assistant", content="Hello")
        return Completion(choices=(Choice(0, message, "stop"),), usage=Usage(5, 40))

    async def stream(c: Call) -> Reply:
        c.trace.upstream_ms = 30.0

        async def chunks() -> Stream:
            yield Chunk(role="assistant", content="Hello")

        return chunks()

    await parts.buffer(call(), reply)
    assert controller.reply_cost.expected(5, 40) == pytest.approx(0.4)
    assert controller.cost.expected(5) == 0.0  # not taken for a first token
    async for _ in await parts.buffer(call(), stream):  # type: ignore[union-attr]
        pass
    assert controller.cost.expected(5) == pytest.approx(0.03)  # the control: a stream's TTFT is
    assert parts.admissions["fake"].gate.in_flight == 0
