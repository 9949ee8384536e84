"""End to end through Ollama's door: a real model (SmolLM2-135M-Instruct on llama.cpp, launched by Fluido)
reached with the official ``ollama`` client and LangChain's ChatOllama, while the preferred Ollama target is
down."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest
from langchain_ollama import ChatOllama

from proxy.config import parse
from tests.conftest import free_port, running
from tests.e2e.test_smollm2 import embedded_config

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
FRESH = {"Cache-Control": "no-store"}  # every test here must reach the model, not the response cache
OPTIONS = {"temperature": 0, "seed": 1, "num_predict": 16}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(parse(embedded_config(free_port()))) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[ollama.Client]:
    with ollama.Client(host=url, headers=FRESH, timeout=120) as c:
        yield c


def test_a_real_model_answers_through_the_ollama_door(client: ollama.Client) -> None:
    reply = client.chat(model="default", messages=QUESTION, options=OPTIONS, stream=False)
    assert reply.message.content and reply.message.content.strip()
    assert reply.done is True and reply.done_reason in ("stop", "length")
    assert reply.eval_count is not None and 0 < reply.eval_count <= 16
    assert reply.prompt_eval_count is not None and reply.prompt_eval_count > 0
    assert reply.total_duration is not None and reply.total_duration > 0


def test_a_real_model_streams_ndjson_through_the_ollama_door(client: ollama.Client) -> None:
    parts = list(client.chat(model="default", messages=QUESTION, options=OPTIONS, stream=True))
    pieces = [p.message.content for p in parts if p.message.content]
    assert len(pieces) > 1 and "".join(pieces).strip()
    last = parts[-1]
    assert last.done is True and last.done_reason in ("stop", "length")
    # Measured by Fluido; llama-cpp-python's server reports no usage in a stream, so the counts stay absent.
    assert last.total_duration and last.prompt_eval_duration and last.eval_duration
    assert last.eval_count is None or 0 < last.eval_count <= 16


def test_generate_streamed_and_whole_agree_at_temperature_zero(client: ollama.Client) -> None:
    prompt = QUESTION[0]["content"]
    whole = client.generate(model="default", prompt=prompt, options=OPTIONS).response
    streamed = "".join(
        p.response for p in client.generate(model="default", prompt=prompt, options=OPTIONS, stream=True)
    )
    assert whole.strip() and streamed == whole


def test_chat_ollama_on_a_real_model(url: str) -> None:
    llm = ChatOllama(
        base_url=url, model="default", temperature=0, num_predict=16, client_kwargs={"headers": FRESH}
    )
    reply = llm.invoke("What is the capital of France? Answer in one word.")
    llm._client.close()
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.response_metadata["done_reason"] in ("stop", "length")
