"""LangChain's ChatOllama, pointed at Fluido by base_url only, in front of each fake upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_ollama._utils import validate_model

from tests.conftest import config, running
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


@pytest.fixture
def url(upstream: Fake) -> Iterator[str]:
    with running(config(upstream)) as base:
        yield base


@pytest.fixture
def chat_ollama(url: str) -> Iterator[Callable[..., ChatOllama]]:
    """ChatOllama instances on Fluido, their HTTP connections closed at the end of the test."""
    made: list[ChatOllama] = []

    def make(model: str = "chat", **kwargs: Any) -> ChatOllama:
        made.append(llm := ChatOllama(base_url=url, model=model, **kwargs))
        return llm

    yield make
    for llm in made:
        llm._client.close()


def test_invoke_returns_the_reply_with_usage(chat_ollama: Callable[..., ChatOllama], upstream: Fake) -> None:
    reply = chat_ollama(validate_model_on_init=True).invoke([HumanMessage("hi")])
    assert reply.content == upstream.reply
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == len(
        upstream.reply.split()
    )
    assert reply.response_metadata["done_reason"] == "stop"


def test_stream_yields_the_reply_in_pieces(chat_ollama: Callable[..., ChatOllama], upstream: Fake) -> None:
    pieces = [chunk.content for chunk in chat_ollama().stream("hi")]
    assert len([p for p in pieces if p]) > 1
    assert "".join(str(p) for p in pieces) == upstream.reply


def test_bound_tools_come_back_as_tool_calls(chat_ollama: Callable[..., ChatOllama], upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    llm = chat_ollama().bind_tools([get_weather])
    reply = llm.invoke("weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    upstream.tool_calls = None
    answer = llm.invoke(
        [
            HumanMessage("weather in Paris?"),
            reply,
            ToolMessage("sunny", tool_call_id=reply.tool_calls[0]["id"] or ""),
        ]
    )
    assert answer.content == upstream.reply


def test_embeddings(url: str) -> None:
    embeddings = OllamaEmbeddings(base_url=url, model="chat")
    vectors = embeddings.embed_documents(["a", "b"])
    embeddings._client.close()
    assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0] != vectors[1]


def test_validation_on_init_knows_the_aliases(chat_ollama: Callable[..., ChatOllama]) -> None:
    """What ``validate_model_on_init`` runs (a failing init would leave its connection open)."""
    llm = chat_ollama(validate_model_on_init=True)  # the positive control: the alias is listed
    with pytest.raises(ValueError, match="not found"):
        validate_model(llm._client, "nope")
