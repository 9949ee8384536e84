"""End to end: RAG in front of a real model (SmolLM2-135M-Instruct on llama.cpp, launched by Fluido).

Three made-up facts, each in a document of its own, that the model cannot know. Asked with the store, at
temperature 0, it answers each from its document and cites it as [1], and the header names that document
first; asked the same without the store, it has neither the fact nor a citation. The facts are ones the
model has no prior for: it ignores a source that contradicts what it "knows" (a reactor cooled by neon
came back as nitrogen). A 135M model does not cite every answer (10 of 16 facts tried with this prompt);
these three it cites at temperature 0.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from proxy.config import parse
from tests.conftest import free_port, running

pytestmark = pytest.mark.e2e
FACTS = {
    "reactor.txt": ("The Zorblax reactor is cooled by liquid helium at four kelvin.",
                    "What cools the Zorblax reactor?", "helium"),
    "vault.txt": ("The key to the Brixton vault is kept by Mara Olsen.",
                  "Who keeps the key to the Brixton vault?", "olsen"),
    "korva.txt": ("Korva tea is brewed from the dried leaves of the silverthorn shrub.",
                  "What is Korva tea brewed from?", "silverthorn"),
}  # fmt: skip
FRESH = {"Cache-Control": "no-store"}
CITATION = re.compile(r"\[\d+\]")


@pytest.fixture(scope="module")
def fluido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenAI, dict[str, str]]]:
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
        file_ids = {}
        for name, (fact, _, _) in FACTS.items():
            file_ids[name] = client.files.create(
                file=(name, io.BytesIO(fact.encode()), "text/plain"), purpose="assistants"
            ).id
        batches = client.vector_stores.file_batches
        batches.create_and_poll(vector_store_id=store.id, file_ids=list(file_ids.values()))
        yield client, file_ids


def ask(client: OpenAI, model: str, question: str) -> tuple[str, dict[str, str], int]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
        extra_headers=FRESH,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.usage is not None
    return completion.choices[0].message.content or "", dict(raw.headers), completion.usage.prompt_tokens


@pytest.mark.parametrize("name", list(FACTS))
def test_an_answer_from_an_ingested_document_cites_it_and_without_the_store_has_neither(
    fluido: tuple[OpenAI, dict[str, str]], name: str
) -> None:
    client, file_ids = fluido
    _, question, key = FACTS[name]
    with_store, headers, prompt_with = ask(client, "kb", question)
    without, plain_headers, prompt_without = ask(client, "plain", question)
    # The header names the document the answer comes from, as source [1].
    assert headers["x-fluido-rag"] == "injected"
    sources = headers["x-fluido-rag-sources"].split(",")
    assert sources[0].startswith(f"{file_ids[name]}:")
    assert len(sources) == int(headers["x-fluido-rag-passages"])
    # The context reached the model: its prompt grew by about what Fluido says it added.
    assert prompt_with - prompt_without > int(headers["x-fluido-rag-tokens"]) // 2
    assert key in with_store.lower() and "[1]" in with_store, with_store
    assert set(CITATION.findall(with_store)) <= {f"[{n}]" for n in range(1, len(sources) + 1)}, with_store
    # Negative control: the same question without the store.
    assert "x-fluido-rag" not in plain_headers
    assert key not in without.lower() and not CITATION.search(without), without
