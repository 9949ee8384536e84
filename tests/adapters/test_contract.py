"""One contract suite, run against both adapters over real sockets (fake Ollama and fake vLLM).

Every chat test has a streaming twin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest

from adapters import adapter_for
from proxy.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from proxy.parsing import parse_chat, parse_embedding
from proxy.types import Adapter, ChatRequest, Chunk, Target
from tests.conftest import config, free_port, model_of
from tests.fakes._server import split_pieces
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def adapter(upstream: Fake) -> AsyncIterator[Adapter]:
    a = adapter_for(config(upstream).upstreams["up0"])
    yield a
    await a.close()


def target(fake: Fake) -> Target:
    return Target(upstream="up0", model=model_of(fake))


def chat(**body: object) -> ChatRequest:
    return parse_chat(
        orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], **body})
    )


async def collect(chunks: AsyncIterator[Chunk]) -> list[Chunk]:
    return [c async for c in chunks]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.content or "" for c in chunks)


def finish_of(chunks: list[Chunk]) -> str | None:
    return next(c.finish_reason for c in chunks if c.finish_reason)


async def test_chat_returns_the_reply_with_usage(upstream: Fake, adapter: Adapter) -> None:
    completion = await adapter.chat(chat(), target(upstream))
    assert completion.choices[0].message.content == upstream.reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(upstream.reply.split())


async def test_stream_yields_the_reply_in_pieces_then_finish_and_usage(
    upstream: Fake, adapter: Adapter
) -> None:
    chunks = await collect(adapter.stream(chat(stream=True), target(upstream)))
    assert text_of(chunks) == upstream.reply
    assert sum(1 for c in chunks if c.content) > 1
    assert finish_of(chunks) == "stop"
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and usage[0].completion_tokens == len(upstream.reply.split())


async def test_chat_reports_length_when_max_tokens_cuts_the_reply(upstream: Fake, adapter: Adapter) -> None:
    completion = await adapter.chat(chat(max_tokens=2), target(upstream))
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == " ".join(upstream.reply.split()[:2])


async def test_stream_reports_length_when_max_tokens_cuts_the_reply(upstream: Fake, adapter: Adapter) -> None:
    chunks = await collect(adapter.stream(chat(stream=True, max_tokens=2), target(upstream)))
    assert finish_of(chunks) == "length"
    assert text_of(chunks) == " ".join(upstream.reply.split()[:2])


async def test_chat_returns_tool_calls_with_json_string_arguments(upstream: Fake, adapter: Adapter) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Lima"}}]
    completion = await adapter.chat(chat(tools=[WEATHER_TOOL]), target(upstream))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.name == "get_weather" and call.id
    assert orjson.loads(call.arguments) == {"city": "Lima"}


async def test_stream_tool_call_deltas_assemble_into_the_calls(upstream: Fake, adapter: Adapter) -> None:
    upstream.tool_calls = [
        {"name": "get_weather", "arguments": {"city": "Lima"}},
        {"name": "get_weather", "arguments": {"city": "Quito"}},
    ]
    chunks = await collect(adapter.stream(chat(stream=True, tools=[WEATHER_TOOL]), target(upstream)))
    calls: dict[int, dict[str, str]] = {}
    for delta in (d for c in chunks for d in c.tool_calls):
        if delta.id is not None:
            calls[delta.index] = {"id": delta.id, "name": delta.name or "", "arguments": ""}
        calls[delta.index]["arguments"] += delta.arguments
    assert [orjson.loads(c["arguments"]) for _, c in sorted(calls.items())] == [
        {"city": "Lima"},
        {"city": "Quito"},
    ]
    assert all(c["id"] and c["name"] == "get_weather" for c in calls.values())
    assert finish_of(chunks) == "tool_calls"


def _sent_sampling(fake: Fake) -> dict[str, object]:
    body = fake.requests[-1]
    return body["options"] if isinstance(fake, FakeOllama) else body


async def test_chat_sends_sampling_tools_and_format_in_the_upstreams_own_terms(
    upstream: Fake, adapter: Adapter
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}
    req = chat(temperature=0.2, top_p=0.9, seed=7, stop=["\n\n"], max_tokens=30, presence_penalty=0.5,
               frequency_penalty=0.25, tools=[WEATHER_TOOL], response_format=fmt)  # fmt: skip
    await adapter.chat(req, target(upstream))
    sent, body = _sent_sampling(upstream), upstream.requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["stop"]) == (0.2, 0.9, 7, ["\n\n"])
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, 0.25)
    assert body["tools"] == [WEATHER_TOOL]
    if isinstance(upstream, FakeOllama):
        assert sent["num_predict"] == 30
        assert body["format"] == {"type": "object"}
        assert body["stream"] is False
    else:
        assert body["max_tokens"] == 30
        assert body["response_format"] == fmt


async def test_stream_always_asks_the_upstream_for_usage(upstream: Fake, adapter: Adapter) -> None:
    await collect(adapter.stream(chat(stream=True), target(upstream)))
    body = upstream.requests[-1]
    if isinstance(upstream, FakeOllama):
        assert body["stream"] is True  # Ollama always reports eval counts on its final line
    else:
        assert body["stream_options"] == {"include_usage": True}


async def test_chat_of_an_unknown_upstream_model_is_a_retryable_404(upstream: Fake, adapter: Adapter) -> None:
    with pytest.raises(UpstreamRejected) as info:
        await adapter.chat(chat(), Target("up0", "no-such-model"))
    assert info.value.status == 404 and info.value.retryable


async def test_stream_of_an_unknown_upstream_model_is_a_retryable_404(
    upstream: Fake, adapter: Adapter
) -> None:
    with pytest.raises(UpstreamRejected) as info:
        await collect(adapter.stream(chat(stream=True), Target("up0", "no-such-model")))
    assert info.value.status == 404 and info.value.retryable


@pytest.mark.parametrize(("status", "error"), [(500, UpstreamError), (503, UpstreamUnavailable)])
async def test_chat_upstream_5xx_is_a_retryable_upstream_error(
    upstream: Fake, adapter: Adapter, status: int, error: type[UpstreamError]
) -> None:
    upstream.fail_status = status
    with pytest.raises(error) as info:
        await adapter.chat(chat(), target(upstream))
    assert info.value.retryable and info.value.status == (503 if status == 503 else 502)


@pytest.mark.parametrize(("status", "error"), [(500, UpstreamError), (503, UpstreamUnavailable)])
async def test_stream_upstream_5xx_is_a_retryable_upstream_error(
    upstream: Fake, adapter: Adapter, status: int, error: type[UpstreamError]
) -> None:
    upstream.fail_status = status
    with pytest.raises(error) as info:
        await collect(adapter.stream(chat(stream=True), target(upstream)))
    assert info.value.retryable and info.value.status == (503 if status == 503 else 502)


async def test_chat_upstream_400_is_passed_on_and_not_retried(upstream: Fake, adapter: Adapter) -> None:
    upstream.fail_status = 400
    with pytest.raises(UpstreamRejected) as info:
        await adapter.chat(chat(), target(upstream))
    assert info.value.status == 400 and not info.value.retryable


async def test_stream_upstream_400_is_passed_on_and_not_retried(upstream: Fake, adapter: Adapter) -> None:
    upstream.fail_status = 400
    with pytest.raises(UpstreamRejected) as info:
        await collect(adapter.stream(chat(stream=True), target(upstream)))
    assert info.value.status == 400 and not info.value.retryable


@pytest.mark.parametrize("fault", ["drop_after", "malformed_after", "error_after"])
async def test_stream_fault_after_output_raises_instead_of_ending_quietly(
    upstream: Fake, adapter: Adapter, fault: str
) -> None:
    setattr(upstream, fault, 2)
    seen: list[Chunk] = []
    with pytest.raises(UpstreamError):
        async for chunk in adapter.stream(chat(stream=True), target(upstream)):
            seen.append(chunk)
    assert text_of(seen) == "".join(split_pieces(upstream.reply)[:2])


async def test_chat_fault_is_an_upstream_error(upstream: Fake, adapter: Adapter) -> None:
    upstream.error_after = 1
    with pytest.raises(UpstreamError):
        await adapter.chat(chat(), target(upstream))


async def test_stream_survives_frames_split_into_tiny_writes(upstream: Fake, adapter: Adapter) -> None:
    upstream.split_writes = True
    chunks = await collect(adapter.stream(chat(stream=True), target(upstream)))
    assert text_of(chunks) == upstream.reply and finish_of(chunks) == "stop"


async def test_chat_returns_reasoning_as_reasoning_content(upstream: Fake, adapter: Adapter) -> None:
    if isinstance(upstream, FakeOllama):
        upstream.thinking = "Let me think."
    else:
        upstream.reasoning = "Let me think."
    completion = await adapter.chat(chat(think=True), target(upstream))
    assert completion.choices[0].message.reasoning_content == "Let me think."


async def test_stream_yields_reasoning_before_content(upstream: Fake, adapter: Adapter) -> None:
    if isinstance(upstream, FakeOllama):
        upstream.thinking = "Let me think."
    else:
        upstream.reasoning = "Let me think."
    chunks = await collect(adapter.stream(chat(stream=True, think=True), target(upstream)))
    assert "".join(c.reasoning or "" for c in chunks) == "Let me think."
    first_reasoning = next(i for i, c in enumerate(chunks) if c.reasoning)
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert first_reasoning < first_content


async def test_chat_to_a_closed_port_is_unavailable(upstream: Fake) -> None:
    cfg = config(upstream).upstreams["up0"]
    a = adapter_for(dataclasses.replace(cfg, url=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(UpstreamUnavailable):
            await a.chat(chat(), target(upstream))
        with pytest.raises(UpstreamUnavailable):
            await collect(a.stream(chat(stream=True), target(upstream)))
    finally:
        await a.close()


async def test_embeddings_return_one_vector_per_input_in_openai_shape(
    upstream: Fake, adapter: Adapter
) -> None:
    req = parse_embedding(orjson.dumps({"model": "chat", "input": ["a cat", "a dog"]}))
    result = await adapter.embed(req, target(upstream))
    assert [d["index"] for d in result["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in result["data"])
    assert result["data"][0]["embedding"] != result["data"][1]["embedding"]


async def test_models_and_health_answer_from_the_upstream(upstream: Fake, adapter: Adapter) -> None:
    assert model_of(upstream) in await adapter.models()
    assert await adapter.health()
