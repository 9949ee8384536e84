"""The official ``ollama`` Python client, pointed at Fluido by its host only, in front of each fake upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import ollama
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, config, free_port, running, threaded, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]
STATISTICS = ("total_duration", "prompt_eval_count", "eval_count")


@pytest.fixture
def ollama_fake() -> Iterator[FakeOllama]:
    with threaded(FakeOllama()) as fake:
        assert isinstance(fake, FakeOllama)
        yield fake


@pytest.fixture
def client(upstream: Fake) -> Iterator[ollama.Client]:
    with running(config(upstream)) as url, ollama.Client(host=url) as client:
        yield client


def last_chat(fake: Fake) -> dict[str, object]:
    return [r for r in fake.requests if r.get("messages")][-1]


def test_chat_returns_the_reply_with_statistics(client: ollama.Client, upstream: Fake) -> None:
    reply = client.chat(model="chat", messages=HI)
    assert reply.message.role == "assistant" and reply.message.content == upstream.reply
    assert reply.done is True and reply.done_reason == "stop" and reply.model == "chat"
    assert all(isinstance(reply[key], int) and reply[key] > 0 for key in STATISTICS)


def test_chat_streams_the_reply_in_lines_ending_with_done(client: ollama.Client, upstream: Fake) -> None:
    parts = list(client.chat(model="chat:latest", messages=HI, stream=True))
    assert len(parts) > 2 and all(p.done is False for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == upstream.reply
    last = parts[-1]
    assert last.done is True and last.done_reason == "stop" and last.model == "chat:latest"
    assert all(isinstance(last[key], int) and last[key] > 0 for key in (*STATISTICS, "eval_duration"))
    assert last.eval_count == len([p for p in parts if p.message.content])


def test_generate_answers_the_prompt_after_the_system_prompt(client: ollama.Client, upstream: Fake) -> None:
    reply = client.generate(model="chat", prompt="hi", system="be brief")
    assert reply.response == upstream.reply and reply.done is True
    assert last_chat(upstream)["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}
    ]  # fmt: skip


def test_generate_streams(client: ollama.Client, upstream: Fake) -> None:
    parts = list(client.generate(model="chat", prompt="hi", stream=True))
    assert "".join(p.response for p in parts) == upstream.reply
    assert parts[-1].done is True and parts[-1].eval_count is not None


def test_num_predict_limits_the_reply_and_says_length(client: ollama.Client, upstream: Fake) -> None:
    upstream.reply = "one two three four five six"
    reply = client.chat(model="chat", messages=HI, options={"num_predict": 2, "temperature": 0})
    assert reply.done_reason == "length" and reply.eval_count == 2


def test_tool_calls_come_back_with_object_arguments(client: ollama.Client, upstream: Fake) -> None:
    upstream.tool_calls = [{"name": "weather", "arguments": {"city": "Paris", "days": 2}}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    for stream in (False, True):
        if stream:
            parts = list(client.chat(model="chat", messages=HI, tools=tools, stream=True))
            calls = [c for p in parts for c in p.message.tool_calls or ()]
            assert parts[-1].done is True
        else:
            calls = list(client.chat(model="chat", messages=HI, tools=tools).message.tool_calls or ())
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
            ("weather", {"city": "Paris", "days": 2})
        ]


def test_a_tool_result_goes_back_to_the_upstream(client: ollama.Client, upstream: Fake) -> None:
    messages = [
        *HI,
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Paris"}}}
        ]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]  # fmt: skip
    assert client.chat(model="chat", messages=messages).message.content == upstream.reply
    sent = last_chat(upstream)["messages"]
    assert isinstance(sent, list)
    if isinstance(upstream, FakeOllama):
        assert sent[2] == {"role": "tool", "content": "sunny", "tool_name": "weather"}
        assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    else:
        assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
        assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'


def test_thinking_comes_back_as_thinking(client: ollama.Client, upstream: Fake) -> None:
    if isinstance(upstream, FakeOllama):
        upstream.thinking = "Let me think."
    else:
        upstream.reasoning = "Let me think."
    reply = client.chat(model="chat", messages=HI, think=True)
    assert reply.message.thinking == "Let me think." and reply.message.content == upstream.reply
    parts = list(client.chat(model="chat", messages=HI, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "Let me think."


def test_options_reach_each_upstream_in_its_own_terms(client: ollama.Client, upstream: Fake) -> None:
    options = {"temperature": 0.1, "num_predict": 50, "top_k": 20, "num_ctx": 8192, "seed": 3}
    client.chat(model="chat", messages=HI, options=options, keep_alive="10m", format="json")
    sent = last_chat(upstream)
    if isinstance(upstream, FakeOllama):  # an Ollama upstream keeps every option it understands
        assert sent["options"] == options and sent["keep_alive"] == "10m" and sent["format"] == "json"
    else:
        assert (sent["temperature"], sent["max_tokens"], sent["top_k"], sent["seed"]) == (0.1, 50, 20, 3)
        assert sent["response_format"] == {"type": "json_object"}
        assert not {"options", "keep_alive", "num_ctx"} & set(sent)


def test_embed_and_the_older_embeddings(client: ollama.Client) -> None:
    many = client.embed(model="chat", input=["a", "b"])
    assert len(many.embeddings) == 2 and many.embeddings[0] != many.embeddings[1]
    one = client.embed(model="chat", input="a")
    assert one.embeddings == many.embeddings[:1]
    assert list(client.embeddings(model="chat", prompt="a").embedding) == list(one.embeddings[0])


def test_list_and_show_name_the_aliases(client: ollama.Client, upstream: Fake) -> None:
    assert [m.model for m in client.list().models] == ["chat:latest"]
    shown = client.show("chat")
    assert shown.details is not None
    if isinstance(upstream, FakeOllama):  # described by the Ollama server behind the alias
        assert shown.details.family == "llama" and "completion" in (shown.capabilities or ())


def loaded_models(client: ollama.Client) -> list[str | None]:
    return [m.model for m in client.ps().models]


def test_ps_follows_what_the_ollama_server_has_loaded(ollama_fake: FakeOllama) -> None:
    with running(config(ollama_fake)) as url, ollama.Client(host=url) as client:
        deadline = time.monotonic() + 10
        while loaded_models(client) != ["chat:latest"]:  # Fluido preloads its Ollama models at start
            assert time.monotonic() < deadline, "the model was never preloaded"
            time.sleep(0.05)
        assert client.generate(model="chat", keep_alive=0).done_reason == "unload"
        assert loaded_models(client) == [] and ollama_fake.loaded == {}
        client.chat(model="chat", messages=HI)
        assert loaded_models(client) == ["chat:latest"]


def test_ps_knows_nothing_loaded_without_an_ollama_upstream(vllm: FakeVLLM) -> None:
    with running(config(vllm)) as url, ollama.Client(host=url) as client:
        client.chat(model="chat", messages=HI)
        assert loaded_models(client) == []


def test_an_unload_is_refused_where_the_server_keeps_its_model(vllm: FakeVLLM) -> None:
    with running(config(vllm)) as url, ollama.Client(host=url) as client:
        assert client.generate(model="chat").done_reason == "load"
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model="chat", keep_alive=0)
        assert info.value.status_code == 400 and "cannot be unloaded" in info.value.error


def test_an_unknown_model_is_a_404_response_error(client: ollama.Client) -> None:
    for call in (
        lambda: client.chat(model="nope", messages=HI),
        lambda: list(client.chat(model="nope", messages=HI, stream=True)),
        lambda: client.generate(model="nope", prompt="hi"),
        lambda: client.embed(model="nope", input="a"),
        lambda: client.show("nope"),
    ):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 404 and info.value.error == "model 'nope' not found"


def test_model_management_is_refused_with_a_message(client: ollama.Client) -> None:
    for call in (
        lambda: client.pull("llama3.2"),
        lambda: client.delete("chat"),
        lambda: client.copy("chat", "chat2"),
        lambda: client.create(model="x", from_="chat"),
    ):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 501 and "managed on the upstream servers" in info.value.error


def test_a_load_request_is_acknowledged(client: ollama.Client) -> None:
    reply = client.generate(model="chat")
    assert reply.done is True and reply.done_reason == "load" and reply.response == ""


def test_images_reach_each_upstream_in_its_own_terms(client: ollama.Client, upstream: Fake) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    client.chat(model="chat", messages=[{"role": "user", "content": "what is this?", "images": [png]}])
    sent = last_chat(upstream)["messages"]
    assert isinstance(sent, list)
    if isinstance(upstream, FakeOllama):
        assert sent[0] == {"role": "user", "content": "what is this?", "images": [png]}
    else:
        assert sent[0]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{png}"},
        }


def test_list_show_and_ps_survive_an_ollama_upstream_that_is_down(vllm: FakeVLLM) -> None:
    down = {"kind": "ollama", "url": f"http://127.0.0.1:{free_port()}"}
    cfg = parse({
        "upstreams": {"ollama": down, "vllm": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "ollama", "model": "llama3.2:1b"},
                                        {"upstream": "vllm", "model": VLLM_MODEL}]}},
    })  # fmt: skip
    with running(cfg) as url, ollama.Client(host=url) as client:
        assert [m.model for m in client.list().models] == ["chat:latest"]
        assert client.show("chat").capabilities == ["completion"]
        assert loaded_models(client) == []
        assert client.chat(model="chat", messages=HI).message.content == vllm.reply  # served by the fallback
