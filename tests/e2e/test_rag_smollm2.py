"""End to end: RAG in front of a real model (SmolLM2-135M-Instruct on llama.cpp, launched by Fluido).

A 135M model follows instructions loosely, so what is asserted is what Fluido controls: the header names
the ingested document, the context reaches the model (its prompt grows by about the tokens Fluido says it
added), and an answer that needs the document's made-up fact gets it with the store and not without.
At temperature 0 the model copies this fact from its source; it does not write the "[1]" citation it is
asked for (nor did it for other questions tried), so the citation is not asserted. It also ignores a
source whose fact contradicts what it "knows" (a reactor cooled by neon came back as nitrogen): the fact
here is one it has no prior for.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from proxy.config import parse
from tests.conftest import free_port, running

pytestmark = pytest.mark.e2e
FACT = "Professor Ilse Quandt invented the glimmer lamp in 1894."
QUESTION = [{"role": "user", "content": "Who invented the glimmer lamp?"}]
FRESH = {"Cache-Control": "no-store"}


@pytest.fixture(scope="module")
def fluido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenAI, str]]:
    tmp = tmp_path_factory.mktemp("rag-e2e")
    port = free_port()
    target = [{"upstream": "local", "model": "smollm2"}]
    cfg = parse(
        {
            "upstreams": {
                "local": {"kind": "openai", "url": f"http://127.0.0.1:{port}/v1", "embedded": {"n_ctx": 2048}}
            },
            "models": {
                "plain": {"targets": target},
                "kb": {"targets": target, "rag": {"stores": ["facts"], "min_score": 0.3, "top_k": 2}},
            },
            "rag": {"enabled": True, "path": str(tmp / "rag")},
        }
    )
    with running(cfg) as url:
        deadline = time.monotonic() + 300
        while not httpx.get(f"{url}/ready", timeout=30).json()["dependencies"]["rag_chroma"]["ok"]:
            assert time.monotonic() < deadline, "retrieval never became ready"
            time.sleep(0.5)
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        store = client.vector_stores.create(name="facts")
        file_id = client.files.create(
            file=("glimmer.txt", io.BytesIO(FACT.encode()), "text/plain"), purpose="assistants"
        ).id
        client.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
        yield client, file_id


def ask(client: OpenAI, model: str) -> tuple[str, dict[str, str], int]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=QUESTION,
        max_tokens=48,
        temperature=0,
        extra_headers=FRESH,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.usage is not None
    return completion.choices[0].message.content or "", dict(raw.headers), completion.usage.prompt_tokens


def test_the_answer_comes_from_the_ingested_document_only_with_the_store(fluido: tuple[OpenAI, str]) -> None:
    client, file_id = fluido
    with_store, headers, prompt_with = ask(client, "kb")
    without, plain_headers, prompt_without = ask(client, "plain")
    assert headers["x-fluido-rag"] == "injected"
    assert headers["x-fluido-rag-sources"].startswith(f"{file_id}:")
    assert "x-fluido-rag" not in plain_headers
    # The context reached the model: its prompt grew by about what Fluido says it added.
    added = int(headers["x-fluido-rag-tokens"])
    assert prompt_with - prompt_without > added // 2
    assert "quandt" in with_store.lower(), with_store
    assert "quandt" not in without.lower(), without
