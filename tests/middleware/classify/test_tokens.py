"""Prompt token counts: vLLM's /tokenize where configured, remembered per text; the estimate otherwise."""

from __future__ import annotations

from typing import Any

import httpx

from adapters import adapter_for
from middleware.classify.tokens import TokenCounter
from proxy.config import parse
from proxy.tokens import MESSAGE_OVERHEAD, estimate_message_tokens
from proxy.types import Message
from tests.conftest import VLLM_MODEL, running, upstream_for
from tests.fakes.vllm import FakeVLLM

TEXT = "supercalifragilistic words here"  # 3 words for the fake's tokenizer; 7 by the estimate


async def test_counts_come_from_the_upstream_tokenizer_and_are_remembered(vllm: FakeVLLM) -> None:
    adapter = adapter_for(
        parse(
            {
                "upstreams": {"v": upstream_for(vllm)},
                "models": {"m": {"targets": [{"upstream": "v", "model": VLLM_MODEL}]}},
            }
        ).upstreams["v"]
    )
    counter = TokenCounter({"chat": (adapter, VLLM_MODEL)})  # type: ignore[dict-item]
    message = Message("user", TEXT)
    count = await counter.counter("chat", [message])
    assert count(message) == 3 + MESSAGE_OVERHEAD != estimate_message_tokens(message)
    vllm.stop_thread()  # gone: a remembered count needs no upstream
    again = await counter.counter("chat", [message])
    assert again(message) == 3 + MESSAGE_OVERHEAD
    assert (await counter.counter("other-alias", [message]))(message) == estimate_message_tokens(message)
    await adapter.close()


async def test_an_unreachable_tokenizer_falls_back_to_the_estimate(vllm: FakeVLLM) -> None:
    adapter = adapter_for(
        parse(
            {
                "upstreams": {"v": upstream_for(vllm)},
                "models": {"m": {"targets": [{"upstream": "v", "model": VLLM_MODEL}]}},
            }
        ).upstreams["v"]
    )
    vllm.stop_thread()
    count = await TokenCounter({"chat": (adapter, VLLM_MODEL)}).counter("chat", [Message("user", TEXT)])  # type: ignore[dict-item]
    assert count(Message("user", TEXT)) == estimate_message_tokens(Message("user", TEXT))
    await adapter.close()


def config(vllm: FakeVLLM, tokenize: bool) -> Any:
    return parse(
        {
            "upstreams": {"vllm": upstream_for(vllm, tokenize=tokenize)},
            "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
            "classifier": {"profiles": {"short": {"budget": 60}}},
        }
    )


def test_compaction_trims_to_the_budget_in_the_upstreams_tokens(vllm: FakeVLLM) -> None:
    # Long words: few tokens for the fake's word-count tokenizer, many by the character estimate.
    old = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "incomprehensibilities " * 8}
        for i in range(6)
    ]
    body = {"model": "chat", "messages": [*old, {"role": "user", "content": "ok?"}]}
    kept = {}
    for tokenize in (False, True):
        with running(config(vllm, tokenize)) as url:
            httpx.post(f"{url}/v1/chat/completions", json=body)
        kept[tokenize] = len(vllm.requests[-1]["messages"])
    assert kept[True] > kept[False], "real counts are smaller here, so more turns fit the budget"
