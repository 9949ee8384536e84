"""The official ``openai`` SDK pointed at Fluido works as against OpenAI, errors included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from proxy.config import parse
from tests.conftest import OLLAMA_MODEL, chats, config, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def client(upstream: Fake) -> Iterator[OpenAI]:
    with running(config(upstream)) as url:
        yield OpenAI(base_url=url + "/v1", api_key="sk-anything", max_retries=0)


def test_create_returns_the_reply(client: OpenAI, upstream: Fake) -> None:
    completion = client.chat.completions.create(model="chat", messages=HI)
    assert completion.choices[0].message.content == upstream.reply
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_stream_accumulates_to_the_reply(client: OpenAI, upstream: Fake) -> None:
    chunks = list(client.chat.completions.create(model="chat", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == upstream.reply
    assert all(c.usage is None for c in chunks)


def test_stream_with_include_usage_ends_with_a_usage_chunk(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )


def test_tool_calls_come_back_parsed(client: OpenAI, upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Lima"}}]
    message = client.chat.completions.create(model="chat", messages=HI, tools=[TOOL]).choices[0].message
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Lima"}


def test_streamed_tool_calls_accumulate_with_the_sdk_helper(client: OpenAI, upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "get_weather", "arguments": {"city": "Lima"}}]
    with client.chat.completions.stream(model="chat", messages=HI, tools=[TOOL]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lima"}


def test_a_tool_result_round_trip_reaches_the_upstream(client: OpenAI, upstream: Fake) -> None:
    messages = [
        *HI,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Lima"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
    ]  # fmt: skip
    client.chat.completions.create(model="chat", messages=messages, tools=[TOOL])  # type: ignore[arg-type]
    (sent_body,) = chats(upstream)
    sent = sent_body["messages"]
    assert sent[-1]["content"] == "22 C"
    arguments = sent[1]["tool_calls"][0]["function"]["arguments"]
    assert (arguments if isinstance(upstream, FakeOllama) else json.loads(arguments)) == {"city": "Lima"}


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_response_format_json_reaches_the_upstream(client: OpenAI, upstream: Fake, stream: bool) -> None:
    if stream:
        for _ in client.chat.completions.create(
            model="chat", messages=HI, response_format={"type": "json_object"}, stream=True
        ):
            pass
    else:
        client.chat.completions.create(model="chat", messages=HI, response_format={"type": "json_object"})
    (sent,) = chats(upstream)
    if isinstance(upstream, FakeOllama):  # translated to Ollama's native field, and only that
        assert sent == {"model": OLLAMA_MODEL, "messages": HI, "stream": stream, "format": "json"}
    else:  # passed through as sent
        assert sent["response_format"] == {"type": "json_object"} and "format" not in sent


def test_a_json_schema_reaches_ollama_as_its_format(client: OpenAI, upstream: Fake) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    client.chat.completions.create(model="chat", messages=HI, response_format=response_format)  # type: ignore[arg-type]
    (sent,) = chats(upstream)
    if isinstance(upstream, FakeOllama):
        assert sent == {"model": OLLAMA_MODEL, "messages": HI, "stream": False, "format": schema}
    else:
        assert sent["response_format"] == response_format and "format" not in sent


def test_models_list_shows_the_aliases(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["chat"]


def test_embeddings_create_decodes_the_vectors(client: OpenAI) -> None:
    result = client.embeddings.create(model="chat", input=["one", "two"])
    assert [len(d.embedding) for d in result.data] == [8, 8]


def test_bad_request_raises_bad_request_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chat", messages=HI, temperature=7)
    assert info.value.param == "temperature"  # type: ignore[attr-defined]


def test_unknown_model_raises_not_found_error(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert info.value.code == "model_not_found"


def test_an_oversized_body_raises_api_status_error_413(upstream: Fake) -> None:
    cfg = parse({"server": {"max_body_bytes": 1024}, "upstreams": {"up0": upstream_for(upstream)},
                 "models": {"chat": {"targets": [{"upstream": "up0", "model": "m"}]}}})  # fmt: skip
    with running(cfg) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 2000}])
    assert info.value.status_code == 413


@pytest.mark.parametrize(
    ("status", "error"), [(500, openai.InternalServerError), (503, openai.InternalServerError)]
)
def test_upstream_failures_raise_the_typed_server_error(
    client: OpenAI, upstream: Fake, status: int, error: type[openai.APIStatusError]
) -> None:
    upstream.fail_status = status
    with pytest.raises(error) as info:
        client.chat.completions.create(model="chat", messages=HI)
    assert info.value.status_code == (503 if status == 503 else 502)


def test_upstream_rate_limit_raises_rate_limit_error(client: OpenAI, upstream: Fake) -> None:
    upstream.fail_status = 429
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="chat", messages=HI)


def test_a_mid_stream_failure_raises_while_iterating(client: OpenAI, upstream: Fake) -> None:
    upstream.error_after = 2
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="chat", messages=HI, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello from"
