"""The semantic cache through Fluido: near-repeats answered, near-misses never, tenants kept apart, and an
unreachable Chroma never failing a request.

Every negative test has its positive control: the same stored question, asked again in other words by the
same tenant in one turn, is a semantic hit, so a miss is the guard's doing and not an empty index. Each test
stores its own questions, so none depends on another having run."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import httpx
import orjson
import pytest
from chromadb.config import Settings

from proxy.config import parse
from tests.conftest import VLLM_MODEL, chats, free_port, running, threaded, upstream_for
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

ENV = {"A_KEY": "sk-a", "B_KEY": "sk-b"}
COLLECTION = "fluido_semantic_cache"  # the index's default collection


@dataclass
class Semantic:
    url: str
    fake: FakeVLLM
    chroma: Path

    def indexed(self, text: str) -> bool:
        """Whether the question is in the index: read from the same embedded Chroma Fluido writes to."""
        client = chromadb.PersistentClient(
            path=str(self.chroma), settings=Settings(anonymized_telemetry=False)
        )
        found = client.get_collection(COLLECTION).get(
            where_document={"$contains": text}, include=["documents"]
        )
        return text in (found["documents"] or [])


def semantic_config(fake: FakeVLLM, **semantic: Any) -> Any:
    return parse(
        {
            "keys": {"a": {"key_env": "A_KEY"}, "b": {"key_env": "B_KEY"}},
            "upstreams": {"vllm": upstream_for(fake)},
            "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
            # Every class: what keeps a near-miss out must be the guards, not the class.
            "cache": {
                "semantic": {"enabled": True, "classes": ["short", "long", "code", "reasoning"], **semantic}
            },
        },
        ENV,
    )


@pytest.fixture(scope="module")
def fluido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Semantic]:
    tmp: Path = tmp_path_factory.mktemp("semantic")
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        cfg = semantic_config(fake, path=str(tmp / "chroma"), embedding_cache=str(tmp / "embeddings.sqlite"))
        with running(cfg) as url:
            wait_until(
                lambda: httpx.get(f"{url}/ready").json()["dependencies"]["chroma"]["ok"],
                "the semantic index to be ready",
                120,
            )
            yield Semantic(url, fake, tmp / "chroma")


def ask(url: str, text: str, key: str = "sk-a", **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}], **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def stored(semantic: Semantic, text: str, key: str = "sk-a") -> None:
    """Ask once (a miss), then wait until the answer is cached and the question indexed."""
    assert ask(semantic.url, text, key).headers["x-fluido-cache"] == "miss"
    wait_until(lambda: ask(semantic.url, text, key).headers["x-fluido-cache"] == "hit", "the exact entry")
    # The index write runs in the background, after the exact entry.
    wait_until(lambda: semantic.indexed(text), "the question in the index")


def test_a_paraphrase_is_answered_from_the_cache_with_its_similarity(fluido: Semantic) -> None:
    stored(fluido, "What is the capital of France?")
    before = len(fluido.fake.requests)
    r = ask(fluido.url, "What's France's capital city?")
    assert r.headers["x-fluido-cache"] == "semantic", r.headers
    assert 0.8 <= float(r.headers["x-fluido-cache-similarity"]) <= 1
    assert r.json()["choices"][0]["message"]["content"] == fluido.fake.reply
    assert len(fluido.fake.requests) == before


def test_a_paraphrase_differing_only_in_case_is_a_hit(fluido: Semantic) -> None:
    stored(fluido, "What is the capital of Italy?")
    before = len(chats(fluido.fake))
    r = ask(fluido.url, "what's the capital of italy")
    assert r.headers["x-fluido-cache"] == "semantic", r.headers
    assert len(chats(fluido.fake)) == before
    assert ask(fluido.url, "what's the capital of spain").headers["x-fluido-cache"] == "miss", (
        "names still count"
    )


def test_a_different_number_is_never_a_semantic_hit(fluido: Semantic) -> None:
    stored(fluido, "What is 12 times 12?")
    assert ask(fluido.url, "What is 12 times 13?").headers["x-fluido-cache"] == "miss"
    assert ask(fluido.url, "What's 12 times 12?").headers["x-fluido-cache"] == "semantic", "positive control"


def test_another_tenant_never_gets_a_semantic_hit(fluido: Semantic) -> None:
    stored(fluido, "Who wrote Don Quixote?")
    assert (
        ask(fluido.url, "Who is the author of Don Quixote?", key="sk-b").headers["x-fluido-cache"] == "miss"
    )
    control = ask(fluido.url, "Who is the author of Don Quixote?")
    assert control.headers["x-fluido-cache"] == "semantic", "positive control: the owner's paraphrase hits"


def test_multi_turn_conversations_skip_the_semantic_cache(fluido: Semantic) -> None:
    stored(fluido, "How many legs does a spider have?")
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "How many legs do spiders have?"},
    ]
    r = httpx.post(f"{fluido.url}/v1/chat/completions", json={"model": "chat", "temperature": 0, "messages": messages},
                   headers={"authorization": "Bearer sk-a"}, timeout=30)  # fmt: skip
    assert r.headers["x-fluido-cache"] == "miss"
    control = ask(fluido.url, "How many legs do spiders have?")
    assert control.headers["x-fluido-cache"] == "semantic", "positive control: in one turn it hits"


def text_of(r: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(r.json()["choices"][0]["message"]["content"])
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", "a stream that finished"
    deltas = [orjson.loads(e)["choices"] for e in events[:-1]]
    return "".join(c[0]["delta"].get("content") or "" for c in deltas if c)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_an_unreachable_chroma_never_fails_a_request(vllm: FakeVLLM, tmp_path: Path, stream: bool) -> None:
    cfg = semantic_config(
        vllm, host="127.0.0.1", port=free_port(), embedding_cache=str(tmp_path / "embeddings.sqlite")
    )
    sink = io.BytesIO()
    with running(cfg, log_sink=sink) as url:
        # The index is attached once its model is loaded; only then does a request try Chroma.
        wait_until(lambda: b'"semantic_cache_ready"' in sink.getvalue(), "the semantic index", 120)
        answers = [ask(url, "What is the capital of Peru?", stream=stream) for _ in range(2)]
        ready = httpx.get(f"{url}/ready").json()
        metrics = httpx.get(f"{url}/metrics").text
    for r in answers:
        assert r.status_code == 200
        assert text_of(r, stream) == vllm.reply
    assert [r.headers["x-fluido-cache"] for r in answers] == ["miss", "hit"], "the exact cache still works"
    assert ready["status"] == "ready" and ready["dependencies"]["chroma"]["ok"] is False
    warnings = [
        e for e in map(orjson.loads, sink.getvalue().splitlines()) if e["event"] == "cache_unavailable"
    ]
    assert warnings, "the failed look-up and index write are logged"
    unavailable = [line for line in metrics.splitlines() if line.startswith("fluido_cache_unavailable_total")]
    assert unavailable and float(unavailable[0].split()[-1]) >= 1, "and counted"
