"""Ollama's num_ctx, sized per request: big enough, from a few sizes, sticky upward, never silently cut."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from adapters.context import ContextSizer
from proxy.config import parse
from proxy.errors import InvalidRequest
from tests.conftest import OLLAMA_MODEL, chats, running, upstream_for
from tests.fakes.ollama import FakeOllama


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sizes_round_up_to_the_next_step_within_the_maximum() -> None:
    sizer = ContextSizer(sticky_seconds=0)
    assert sizer.size("m", 100, 200, maximum=32768) == 2048
    assert sizer.size("m", 3000, 1000, maximum=32768) == 4096
    assert sizer.size("m", 9000, None, maximum=32768) == 16384  # room for the answer when none is asked
    assert sizer.size("m", 20000, 20000, maximum=32768) == 32768  # capped: the answer gets what is left


def test_a_prompt_larger_than_the_model_is_a_400_not_a_truncation() -> None:
    with pytest.raises(InvalidRequest) as info:
        ContextSizer(sticky_seconds=0).size("m", 9000, 10, maximum=8192)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"


def test_a_grown_size_is_held_so_ollama_does_not_reload_the_model() -> None:
    clock = Clock()
    sizer = ContextSizer(sticky_seconds=600, clock=clock)
    assert sizer.size("m", 10000, 1000, maximum=65536) == 16384
    clock.now = 300
    assert sizer.size("m", 100, 100, maximum=65536) == 16384, "no flapping back down"
    assert sizer.size("other", 100, 100, maximum=65536) == 2048, "held per model"
    clock.now = 601
    assert sizer.size("m", 100, 100, maximum=65536) == 2048, "released after a quiet while"


def ollama_config(ollama: FakeOllama, **target: object) -> object:
    return parse(
        {
            "upstreams": {"ollama": upstream_for(ollama)},
            "models": {"chat": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL, **target}]}},
        }
    )


def the_chat(ollama: FakeOllama) -> dict[str, object]:
    """The one chat request Ollama got: the start-up preload may come before or after it."""
    (chat,) = chats(ollama)
    return chat


def options_of(ollama: FakeOllama) -> dict[str, object]:
    options = the_chat(ollama).get("options", {})
    assert isinstance(options, dict)
    return options


def test_fluido_sends_num_ctx_to_ollama(ollama: FakeOllama) -> None:
    with running(ollama_config(ollama, max_context=32768)) as url:  # type: ignore[arg-type]
        long_prompt = "word " * 12000  # about 15,000 estimated tokens
        httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "max_tokens": 500,
                   "messages": [{"role": "user", "content": long_prompt}]}, timeout=10)  # fmt: skip
    assert options_of(ollama)["num_ctx"] == 16384


def test_a_client_set_num_ctx_wins(ollama: FakeOllama) -> None:
    with running(ollama_config(ollama, max_context=32768)) as url:  # type: ignore[arg-type]
        httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "options": {"num_ctx": 4096},
                   "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert options_of(ollama)["num_ctx"] == 4096


def test_without_a_configured_maximum_num_ctx_is_left_to_ollama(ollama: FakeOllama) -> None:
    with running(ollama_config(ollama)) as url:  # type: ignore[arg-type]
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert the_chat(ollama)["messages"] == [{"role": "user", "content": "hi"}]
    assert "num_ctx" not in options_of(ollama)


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_gets_bad_request_context_length_exceeded(ollama: FakeOllama, stream: bool) -> None:
    with running(ollama_config(ollama, max_context=2048)) as url:  # type: ignore[arg-type]
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="chat", stream=stream, messages=[{"role": "user", "content": "word " * 5000}]
            )
    assert info.value.code == "context_length_exceeded"
    assert not any(r.get("messages") for r in ollama.requests), "nothing truncated reached Ollama"
