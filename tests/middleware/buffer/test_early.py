"""The buffer's early shedding decision: a request it would refuse is refused before the links between the
cache and the buffer (RAG retrieval) spend work on it, and it sits there in the chain."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from middleware.buffer import build_buffer
from middleware.buffer.queue import Entry
from proxy.app_parts import build_buffer_parts, build_middleware, build_rag, build_upstreams
from proxy.config import parse
from proxy.errors import Overloaded
from proxy.parsing import parse_chat
from proxy.types import Call, Completion, Reply, Trace

CONFIG = {
    "upstreams": {"fake": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},
    "models": {"chat": {"targets": [{"upstream": "fake", "model": "m"}]}},
    "cache": {"enabled": False},
    "buffer": {"queue_bound": 0, "upstreams": {"fake": {"parallel": 1, "adaptive": False}}},
}


def call() -> Call:
    request = parse_chat(orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}))
    return Call(request, Trace("id", "127.0.0.1", "/v1/chat/completions", time.monotonic()))


async def test_a_request_the_buffer_would_shed_is_refused_before_the_next_link() -> None:
    cfg = parse(CONFIG)
    upstreams = build_upstreams(cfg)
    breakers = {name: up.breaker for name, up in upstreams.items()}
    parts = build_buffer(cfg.buffer, cfg.upstreams, cfg.models, breakers, None, None)
    reached: list[Call] = []

    async def costly(c: Call) -> Reply:
        reached.append(c)
        return Completion(choices=())

    gate = parts.admissions["fake"].gate
    running = gate.arrive("short", 5.0, 0.0)  # the one slot is taken and the queue's bound is 0
    assert isinstance(running, Entry)
    shed_call = call()
    with pytest.raises(Overloaded) as refused:
        await parts.buffer.early(shed_call, costly)
    assert refused.value.code == "queue_full" and refused.value.retry_after is not None
    assert shed_call.notes["shed"] == "queue_full" and not reached
    assert gate.depth == 0 and gate.in_flight == 1  # it took no place
    gate.finish(running, 1.0)
    await parts.buffer.early(call(), costly)  # the control: with a free slot it goes on
    assert len(reached) == 1 and gate.in_flight == 0  # and still took no slot: the buffer takes it


def test_with_rag_the_early_decision_sits_between_the_cache_and_the_retrieval(tmp_path: Path) -> None:
    cfg = parse({**CONFIG, "rag": {"enabled": True, "path": str(tmp_path / "rag")}})
    upstreams = build_upstreams(cfg)
    buffer, _ = build_buffer_parts(cfg, None, None, upstreams)
    rag = build_rag(cfg)
    assert buffer is not None and rag is not None
    chain = build_middleware(cfg, None, None, None, upstreams, buffer, rag)
    early, inject = chain.index(buffer.buffer.early), chain.index(rag.inject)
    assert early == inject - 1 and chain[-1] is buffer.buffer
    without = build_middleware(parse(CONFIG), None, None, None, upstreams, buffer, None)
    assert buffer.buffer.early not in without  # nothing costly between: no second decision
