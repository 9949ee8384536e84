"""response_format json_schema reaches every upstream in the spelling it takes, so the SDK's
``chat.completions.parse(response_format=Model)`` works; an upstream's validation error is a 400."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from proxy.config import parse
from tests.conftest import free_port, model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

ASK = [{"role": "user", "content": "Which city is the capital of France?"}]


class Capital(BaseModel):
    city: str


@contextmanager
def client_for(fake: FakeOllama | FakeVLLM, **options: object) -> Iterator[OpenAI]:
    cfg = parse(
        {
            "upstreams": {"up0": upstream_for(fake, **options)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(fake)}]}},
        }
    )
    with running(cfg) as url:
        yield OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def llama_cpp_like(vllm: FakeVLLM) -> FakeVLLM:
    """A fake that takes response formats the way llama-cpp-python's server does."""
    vllm.json_schema = "json_object_schema"
    vllm.reply = '{"city": "Paris"}'
    return vllm


def test_parse_works_through_an_upstream_that_spells_json_schema_as_json_object(
    llama_cpp_like: FakeVLLM,
) -> None:
    with client_for(llama_cpp_like, json_schema="json_object_schema") as client:
        completion = client.chat.completions.parse(model="chat", messages=ASK, response_format=Capital)
    assert completion.choices[0].message.parsed == Capital(city="Paris")
    sent = llama_cpp_like.requests[-1]["response_format"]
    assert sent["type"] == "json_object"
    assert sent["schema"]["properties"] == {"city": {"title": "City", "type": "string"}}


def test_the_sdks_streamed_parse_works_too(llama_cpp_like: FakeVLLM) -> None:
    with client_for(llama_cpp_like, json_schema="json_object_schema") as client:
        streaming = client.chat.completions.stream(model="chat", messages=ASK, response_format=Capital)
        with streaming as stream:
            final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Capital(city="Paris")


def test_negative_control_without_the_option_the_upstream_refuses_json_schema(
    llama_cpp_like: FakeVLLM,
) -> None:
    """llama-cpp-python gives its validation errors as 500 "internal_server_error", the type a crash has:
    without the spelling option that is an upstream failure, which is why the option exists."""
    with client_for(llama_cpp_like) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.parse(model="chat", messages=ASK, response_format=Capital)
    assert caught.value.status_code == 502


def test_native_json_schema_is_passed_on_unchanged(vllm: FakeVLLM) -> None:
    vllm.reply = '{"city": "Paris"}'
    with client_for(vllm) as client:
        completion = client.chat.completions.parse(model="chat", messages=ASK, response_format=Capital)
    assert completion.choices[0].message.parsed == Capital(city="Paris")
    sent = vllm.requests[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Capital"


def test_ollama_gets_the_schema_as_its_format(ollama: FakeOllama) -> None:
    ollama.reply = '{"city": "Paris"}'
    with client_for(ollama) as client:
        completion = client.chat.completions.parse(model="chat", messages=ASK, response_format=Capital)
    assert completion.choices[0].message.parsed == Capital(city="Paris")
    assert ollama.requests[-1]["format"]["properties"] == {"city": {"title": "City", "type": "string"}}


@pytest.mark.parametrize("status", [400, 422])
def test_an_upstreams_own_validation_error_is_a_400(vllm: FakeVLLM, status: int) -> None:
    vllm.fail_status = status
    with client_for(vllm) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.parse(model="chat", messages=ASK, response_format=Capital)


def test_the_embedded_server_takes_json_schema_as_json_object_by_default() -> None:
    port = free_port()
    cfg = parse(
        {
            "upstreams": {
                "local": {"kind": "openai", "url": f"http://127.0.0.1:{port}/v1", "embedded": {}},
                "vllm": {"kind": "openai", "url": "http://127.0.0.1:1/v1"},
            },
            "models": {"chat": {"targets": [{"upstream": "local", "model": "smollm2"}]}},
        }
    )
    assert cfg.upstreams["local"].json_schema == "json_object_schema"
    assert cfg.upstreams["vllm"].json_schema == "native"
