"""OpenAI -> Ollama request mapping details that the contract suite does not reach."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from adapters.ollama import request_body
from proxy.config import parse
from proxy.errors import InvalidRequest
from proxy.parsing import parse_chat
from proxy.types import Target
from tests.conftest import OLLAMA_MODEL, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.support.wait import wait_until

TARGET = Target(upstream="ollama", model="llama3.2:1b", keep_alive="24h", options={"num_ctx": 8192})


def body_for(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return request_body(
        parse_chat(orjson.dumps({"model": "m", "messages": messages, **extra})), TARGET, stream=True
    )


def test_tool_results_carry_the_name_of_the_call_they_answer() -> None:
    body = body_for(
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c9", "type": "function",
                                                  "function": {"name": "get_weather", "arguments": '{"city":"Lima"}'}}]},
            {"role": "tool", "tool_call_id": "c9", "content": "sunny"},
        ]
    )  # fmt: skip
    assistant, tool = body["messages"][1], body["messages"][2]
    assert assistant["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Lima"}}}]
    assert tool == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


def test_developer_messages_become_system_messages() -> None:
    assert body_for([{"role": "developer", "content": "be brief"}])["messages"][0]["role"] == "system"


def test_data_url_images_travel_as_base64_beside_the_text() -> None:
    parts = [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
    ]
    message = body_for([{"role": "user", "content": parts}])["messages"][0]
    assert message == {"role": "user", "content": "what is it", "images": ["QUJD"]}


def test_remote_image_urls_are_refused_with_the_param() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(InvalidRequest) as info:
        body_for([{"role": "user", "content": parts}])
    assert info.value.param == "messages[0].content"


def test_keep_alive_and_options_come_from_the_target_and_client_extras_win() -> None:
    body = body_for([{"role": "user", "content": "hi"}], top_k=5, options={"num_ctx": 4096})
    assert body["keep_alive"] == "24h"
    assert body["options"] == {"num_ctx": 4096, "top_k": 5}


def test_json_object_format_is_ollamas_json_format() -> None:
    assert (
        body_for([{"role": "user", "content": "hi"}], response_format={"type": "json_object"})["format"]
        == "json"
    )


def test_more_than_one_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        body_for([{"role": "user", "content": "hi"}], n=2)
    assert info.value.param == "n"


def test_keep_alive_reaches_ollama_on_every_call_through_fluido(ollama: FakeOllama) -> None:
    """Each Ollama target's keep_alive goes with every request: the preload, chat (stream or not), embed."""
    cfg = parse(
        {
            "upstreams": {"ollama": upstream_for(ollama)},
            "models": {
                "chat": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL, "keep_alive": "30m"}]}
            },
        }
    )
    hi = [{"role": "user", "content": "hi"}]
    with running(cfg) as url:
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": hi})
        with httpx.stream("POST", f"{url}/v1/chat/completions",
                          json={"model": "chat", "messages": hi, "stream": True}) as streamed:  # fmt: skip
            streamed.read()
        embed = httpx.post(f"{url}/v1/embeddings", json={"model": "chat", "input": ["one", "two"]})
        wait_until(lambda: len(ollama.requests) == 4, "the start-up preload too")
    assert chat.status_code == streamed.status_code == embed.status_code == 200
    assert len(embed.json()["data"]) == 2
    by_kind = {("input" in b, "messages" in b, b.get("stream")): b for b in ollama.requests}
    assert set(by_kind) == {
        (False, False, None),
        (False, True, False),
        (False, True, True),
        (True, False, None),
    }
    assert all(body["keep_alive"] == "30m" for body in ollama.requests), ollama.requests
    assert ollama.hits.count("POST /api/embed") == 1 and ollama.hits.count("POST /api/chat") == 3
