"""Compaction through Fluido: what the upstream receives, and the tokens saved."""

from __future__ import annotations

from typing import Any

import httpx

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, upstream_for
from tests.fakes.vllm import FakeVLLM


def config(vllm: FakeVLLM, budget: int) -> Any:
    return parse(
        {
            "upstreams": {"vllm": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
            "classifier": {"profiles": {"short": {"budget": budget}}},
        }
    )


def conversation() -> list[dict[str, Any]]:
    old = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"turn {i}: " + "padding words   here " * 40,
        }
        for i in range(10)
    ]
    return [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Be brief."}, *old,
            {"role": "user", "content": "and   what   now?"}]  # fmt: skip


def test_old_turns_are_trimmed_to_the_class_budget_and_the_savings_reported(vllm: FakeVLLM) -> None:
    with running(config(vllm, budget=300)) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": conversation()})
    sent = vllm.requests[-1]["messages"]
    assert r.headers["x-fluido-query-class"] == "short" and int(r.headers["x-fluido-tokens-saved"]) > 1000
    assert sent[0] == {"role": "system", "content": "Be brief."} and sent[1]["role"] != "system", (
        "deduplicated"
    )
    assert sent[-1] == {"role": "user", "content": "and   what   now?"}, "the last user turn is untouched"
    assert len(sent) < 8


def test_without_a_budget_only_cleanups_happen(vllm: FakeVLLM) -> None:
    with running(config(vllm, budget=0)) as url:
        httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": conversation()})
    sent = vllm.requests[-1]["messages"]
    assert len(sent) == 12, "one duplicate system message fewer, no turn trimmed"
    assert "   " not in sent[2]["content"], "runs of spaces collapsed in old turns"
