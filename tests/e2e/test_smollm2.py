"""End to end: a real model (SmolLM2-135M-Instruct on llama.cpp, launched by Fluido) behind Fluido,
reached with the official openai SDK while the preferred Ollama target is down."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI
from pydantic import BaseModel

from proxy.config import parse
from tests.conftest import free_port, running

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
FRESH = {"Cache-Control": "no-store"}  # every test here must reach the model, not the response cache


def embedded_config(port: int) -> dict[str, object]:
    return {
        "upstreams": {
            "ollama": {"kind": "ollama", "url": f"http://127.0.0.1:{free_port()}"},
            "local": {"kind": "openai", "url": f"http://127.0.0.1:{port}/v1", "embedded": {"n_ctx": 1024}},
        },
        "models": {
            "default": {
                "targets": [
                    {"upstream": "ollama", "model": "smollm2:135m"},
                    {"upstream": "local", "model": "smollm2"},
                ]
            }
        },
    }


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def smollm2() -> Iterator[tuple[OpenAI, int]]:
    port = free_port()
    with running(parse(embedded_config(port))) as url:
        yield OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120), port
    assert not listening(port), "the child server stops with Fluido"


def test_a_real_model_answers_through_fluido(smollm2: tuple[OpenAI, int]) -> None:
    client, _ = smollm2
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=QUESTION,
        max_tokens=24,
        temperature=0,
        extra_headers=FRESH,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["x-fluido-upstream"] == "local"
    assert completion.choices[0].message.content and completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 24


def test_a_real_model_streams_through_fluido(smollm2: tuple[OpenAI, int]) -> None:
    client, _ = smollm2
    chunks = list(
        client.chat.completions.create(
            model="default",
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            extra_headers=FRESH,  # type: ignore[arg-type]
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stream_and_non_stream_agree_at_temperature_zero(smollm2: tuple[OpenAI, int]) -> None:
    client, _ = smollm2
    args = {
        "model": "default",
        "messages": QUESTION,
        "max_tokens": 16,
        "temperature": 0,
        "seed": 1,
        "extra_headers": FRESH,
    }
    whole = client.chat.completions.create(**args).choices[0].message.content  # type: ignore[call-overload]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)
        if c.choices  # type: ignore[call-overload]
    )
    assert streamed == whole


def test_three_users_streaming_at_once_all_get_finished_streams(smollm2: tuple[OpenAI, int]) -> None:
    """llama-cpp-python ends a running stream early when another request arrives, unless told not to."""
    client, _ = smollm2

    def one(i: int) -> tuple[str, str | None]:
        chunks = list(
            client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": f"Count from {i} to {i + 9}."}],
                max_tokens=16,  # the three wait their turn: on a loaded CPU, keep the queue short
                temperature=0,
                stream=True,
                extra_headers=FRESH,  # type: ignore[arg-type]
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next(
            (c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None
        )
        return text, finish

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(3)))
    assert all(finish in ("stop", "length") for _, finish in results), results
    assert all(text.strip() for text, _ in results)


class Capital(BaseModel):
    city: str


def test_the_sdks_structured_output_parse_works_on_the_embedded_default(smollm2: tuple[OpenAI, int]) -> None:
    client, _ = smollm2
    completion = client.chat.completions.parse(
        model="default",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        response_format=Capital,
        max_tokens=64,
        temperature=0,
        extra_headers=FRESH,  # type: ignore[arg-type]
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Capital) and parsed.city.strip()


def test_n_choices_from_the_embedded_default(smollm2: tuple[OpenAI, int]) -> None:
    client, _ = smollm2
    completion = client.chat.completions.create(
        model="default",
        messages=QUESTION,
        max_tokens=8,
        n=2,
        extra_headers=FRESH,  # type: ignore[arg-type]
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content and c.finish_reason in ("stop", "length") for c in completion.choices)
