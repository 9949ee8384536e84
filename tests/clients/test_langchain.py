"""LangChain's ChatOpenAI, pointed at Fluido by base_url only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.conftest import config, running
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


@pytest.fixture
def llm(upstream: Fake) -> Iterator[ChatOpenAI]:
    with running(config(upstream)) as url:
        yield ChatOpenAI(base_url=url + "/v1", api_key="sk-anything", model="chat", max_retries=0)  # type: ignore[arg-type]


def test_invoke_returns_the_reply(llm: ChatOpenAI, upstream: Fake) -> None:
    assert llm.invoke([HumanMessage("hi")]).content == upstream.reply


def test_stream_yields_the_reply_in_pieces(llm: ChatOpenAI, upstream: Fake) -> None:
    pieces = [chunk.content for chunk in llm.stream("hi")]
    assert len([p for p in pieces if p]) > 1
    assert "".join(str(p) for p in pieces) == upstream.reply


def test_bound_tools_produce_parsed_tool_calls(llm: ChatOpenAI, upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Lima"}}]
    message = llm.bind_tools([get_weather]).invoke("weather in Lima?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Lima"})]


def test_streamed_tool_calls_merge_into_one_call(llm: ChatOpenAI, upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Lima"}}]
    merged: AIMessageChunk | None = None
    for chunk in llm.bind_tools([get_weather]).stream("weather in Lima?"):
        assert isinstance(chunk, AIMessageChunk)
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "Lima"})]


def test_stream_usage_metadata_is_reported(upstream: Fake) -> None:
    with running(config(upstream)) as url:
        llm = ChatOpenAI(base_url=url + "/v1", api_key="x", model="chat", stream_usage=True)  # type: ignore[arg-type]
        merged = None
        for chunk in llm.stream("hi"):
            merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == len(upstream.reply.split())
