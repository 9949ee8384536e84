"""n > 1 gives exactly n choices: n concurrent one-choice generations merged by index, or the upstream's own
n (vLLM, ``n_choices = "native"``); never fewer choices than asked without an error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from proxy.config import ConfigError, parse
from tests.conftest import model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]


@contextmanager
def fluido(fake: Fake, **options: Any) -> Iterator[str]:
    cfg = parse(
        {
            "upstreams": {"up0": upstream_for(fake, **options)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(fake)}]}},
        }
    )
    with running(cfg) as url:
        yield url


def chats(fake: Fake) -> list[dict[str, Any]]:
    return [body for body in fake.requests if body.get("messages")]


def events(url: str, **body: Any) -> list[Any]:
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True, **body}
    ) as r:
        r.read()
    return [
        line[6:] if line == "data: [DONE]" else orjson.loads(line[6:])
        for line in r.text.splitlines()
        if line.startswith("data: ")
    ]


def test_n_fans_out_into_n_generations_with_indexed_choices(upstream: Fake) -> None:
    with fluido(upstream) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model="chat", messages=HI, n=3)  # type: ignore[arg-type]
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content == upstream.reply and c.finish_reason == "stop" for c in completion.choices)
    assert len(chats(upstream)) == 3 and all(body.get("n", 1) == 1 for body in chats(upstream))
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * len(upstream.reply.split())


def test_a_fanned_out_stream_merges_every_choice_by_index(upstream: Fake) -> None:
    with fluido(upstream) as url:
        got = events(url, n=2, stream_options={"include_usage": True})
    assert got[-1] == "[DONE]"
    usage = got[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2 * len(upstream.reply.split())
    chunks = got[:-2]
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(c["delta"].get("content") or "" for c in mine) == upstream.reply
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
    assert len(chats(upstream)) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_native_upstream_gets_n_in_one_request(vllm: FakeVLLM, stream: bool) -> None:
    with fluido(vllm, n_choices="native") as url:
        if stream:
            got = events(url, n=2)
            indexes = {c["choices"][0]["index"] for c in got[:-1]}
            assert got[-1] == "[DONE]" and indexes == {0, 1}
        else:
            r = httpx.post(url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "n": 2})
            assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert [body["n"] for body in chats(vllm)] == [2]


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_an_upstream_that_ignores_n_is_an_error_not_fewer_choices(vllm: FakeVLLM, stream: bool) -> None:
    vllm.honours_n = False  # as llama-cpp-python's server does
    with fluido(vllm, n_choices="native") as url:
        if stream:
            got = events(url, n=2)
            assert "[DONE]" not in got and got[-1]["error"]["type"] == "upstream_error"
        else:
            r = httpx.post(url + "/v1/chat/completions", json={"model": "chat", "messages": HI, "n": 2})
            assert r.status_code == 502 and "1 choices for n=2" in r.json()["error"]["message"]


def test_a_client_leaving_a_fanned_out_stream_stops_every_generation(upstream: Fake) -> None:
    upstream.reply = " ".join(["word"] * 50)
    upstream.delay_between = 0.2
    with fluido(upstream) as url:
        body = {"model": "chat", "messages": HI, "stream": True, "n": 3}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
            next(r.iter_lines())
        deadline = time.monotonic() + 1.0
        while upstream.disconnects < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert upstream.disconnects == 3


def test_ollama_cannot_be_configured_for_native_n(ollama: FakeOllama) -> None:
    with pytest.raises(ConfigError, match="n_choices"):
        parse(
            {
                "upstreams": {"up0": upstream_for(ollama, n_choices="native")},
                "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(ollama)}]}},
            }
        )
