"""The semantic cache through Fluido: near-repeats answered, near-misses never, tenants kept apart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, threaded, upstream_for
from tests.fakes.vllm import FakeVLLM

ENV = {"A_KEY": "sk-a", "B_KEY": "sk-b"}


@pytest.fixture(scope="module")
def fluido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeVLLM]]:
    tmp: Path = tmp_path_factory.mktemp("semantic")
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        cfg = parse(
            {
                "keys": {"a": {"key_env": "A_KEY"}, "b": {"key_env": "B_KEY"}},
                "upstreams": {"vllm": upstream_for(fake)},
                "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
                "cache": {
                    "semantic": {
                        "enabled": True,
                        # Every class: what keeps a near-miss out must be the guards, not the class.
                        "classes": ["short", "long", "code", "reasoning"],
                        "path": str(tmp / "chroma"),
                        "embedding_cache": str(tmp / "embeddings.sqlite"),
                    }
                },
            },
            ENV,
        )
        with running(cfg) as url:
            deadline = time.monotonic() + 120
            while not httpx.get(f"{url}/ready").json()["dependencies"]["chroma"]["ok"]:
                assert time.monotonic() < deadline, "the semantic index never became ready"
                time.sleep(0.2)
            yield url, fake


def ask(url: str, text: str, key: str = "sk-a") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def cached_soon(url: str, text: str) -> None:
    """Indexing happens after the reply: wait until the question is findable."""
    deadline = time.monotonic() + 10
    while ask(url, text).headers["x-fluido-cache"] != "hit":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # the index write runs in the background, after the exact entry


def test_a_paraphrase_is_answered_from_the_cache_with_its_similarity(fluido: tuple[str, Any]) -> None:
    url, fake = fluido
    assert ask(url, "What is the capital of France?").headers["x-fluido-cache"] == "miss"
    cached_soon(url, "What is the capital of France?")
    before = len(fake.requests)
    r = ask(url, "What's France's capital city?")
    assert r.headers["x-fluido-cache"] == "semantic", r.headers
    assert 0.8 <= float(r.headers["x-fluido-cache-similarity"]) <= 1
    assert r.json()["choices"][0]["message"]["content"] == fake.reply and len(fake.requests) == before


def test_a_different_number_is_never_a_semantic_hit(fluido: tuple[str, Any]) -> None:
    url, _ = fluido
    ask(url, "What is 12 times 12?")
    cached_soon(url, "What is 12 times 12?")
    assert ask(url, "What is 12 times 13?").headers["x-fluido-cache"] == "miss"


def test_another_tenant_never_gets_a_semantic_hit(fluido: tuple[str, Any]) -> None:
    url, _ = fluido
    ask(url, "Who wrote Don Quixote?")
    cached_soon(url, "Who wrote Don Quixote?")
    assert ask(url, "Who is the author of Don Quixote?", key="sk-b").headers["x-fluido-cache"] == "miss"


def test_multi_turn_conversations_skip_the_semantic_cache(fluido: tuple[str, Any]) -> None:
    url, _ = fluido
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "What's France's capital city?"},
    ]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "temperature": 0, "messages": messages},
                   headers={"authorization": "Bearer sk-a"})  # fmt: skip
    assert r.headers["x-fluido-cache"] == "miss"
