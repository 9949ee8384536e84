"""Wrong-typed and absurdly nested requests get a 400 in OpenAI's shape naming the field, never a 500."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.parsing import MAX_DEPTH
from tests.conftest import config, running
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fluido(upstream: Fake) -> Iterator[httpx.Client]:
    with running(config(upstream)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def message(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi", **fields}]}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": HI, **fields}


WRONG_TYPES = [
    (message(role=["user"]), "messages[0].role"),
    (message(role={"user": 1}), "messages[0].role"),
    (message(role=None), "messages[0].role"),
    (message(content={"text": "hi"}), "messages[0].content"),
    (message(content=[["hi"]]), "messages[0].content[0]"),
    (message(content=[{"type": 7}]), "messages[0].content[0]"),
    (message(content=[{"type": "text", "text": ["hi"]}]), "messages[0].content[0].text"),
    (message(content=[{"type": "image_url", "image_url": "http://x/y.png"}]), "messages[0].content[0]"),
    (message(name=5), "messages[0].name"),
    (message(tool_calls={"id": "a"}), "messages[0].tool_calls"),
    (
        message(tool_calls=[{"id": 5, "function": {"name": "f", "arguments": "{}"}}]),
        "messages[0].tool_calls[0].id",
    ),
    (
        message(tool_calls=[{"function": {"name": "f", "arguments": {}}}]),
        "messages[0].tool_calls[0].function.arguments",
    ),
    (
        {"model": "chat", "messages": [{"role": "tool", "content": "x", "tool_call_id": 3}]},
        "messages[0].tool_call_id",
    ),
    ({"model": "chat", "messages": ["hi"]}, "messages[0]"),
    ({"model": ["chat"], "messages": HI}, "model"),
    (body(messages={"role": "user"}), "messages"),
    (body(stream=1), "stream"),
    (body(stream=True, stream_options={"include_usage": "yes"}), "stream_options"),
    (body(stream=True, stream_options=[True]), "stream_options"),
    (body(temperature=[1]), "temperature"),
    (body(temperature=3), "temperature"),
    (body(top_p="0.5"), "top_p"),
    (body(presence_penalty={}), "presence_penalty"),
    (body(frequency_penalty=True), "frequency_penalty"),
    (body(max_tokens="10"), "max_tokens"),
    (body(max_tokens=1.5), "max_tokens"),
    (body(max_completion_tokens=[10]), "max_completion_tokens"),
    (body(max_tokens=10, max_completion_tokens="x"), "max_completion_tokens"),
    (body(max_tokens="x", max_completion_tokens=10), "max_tokens"),
    (body(seed="1"), "seed"),
    (body(seed=2**63), "seed"),
    (body(n="2"), "n"),
    (body(n=0), "n"),
    (body(n=10_000), "n"),
    (body(stop=5), "stop"),
    (body(stop=["a", 5]), "stop"),
    (body(tools={"type": "function"}), "tools"),
    (body(tools=["f"]), "tools[0]"),
    (body(tool_choice=5), "tool_choice"),
    (body(tool_choice="sometimes"), "tool_choice"),
    (body(tool_choice=["auto"]), "tool_choice"),
    (body(response_format="json"), "response_format"),
    (body(response_format={"type": ["json_object"]}), "response_format"),
    (body(response_format={"type": "json_schema", "json_schema": "x"}), "response_format.json_schema"),
    (
        body(response_format={"type": "json_schema", "json_schema": {"schema": [1]}}),
        "response_format.json_schema",
    ),
]


@pytest.mark.parametrize(("request_body", "param"), WRONG_TYPES, ids=[p for _, p in WRONG_TYPES])
def test_a_wrong_typed_field_is_an_openai_400_naming_it(
    fluido: httpx.Client, request_body: dict[str, Any], param: str
) -> None:
    r = fluido.post("/v1/chat/completions", json=request_body)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"deeper": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("depth", [300, 900])
def test_an_unknown_field_nested_hundreds_deep_in_a_content_part_is_a_400(
    fluido: httpx.Client, depth: int, stream: bool
) -> None:
    part = {"type": "text", "text": "hi", "x-extra": nested(depth)}
    req = {"model": "chat", "stream": stream, "messages": [{"role": "user", "content": [part]}]}
    # The standard library's encoder: orjson itself refuses to write anything deeper than 255 levels.
    r = fluido.post("/v1/chat/completions", content=json.dumps(req).encode())
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert fluido.get("/health").status_code == 200


def test_positive_control_moderate_nesting_passes_through_to_the_upstream(
    fluido: httpx.Client, upstream: Fake
) -> None:
    part = {"type": "text", "text": "hi", "x-extra": nested(MAX_DEPTH - 10)}
    r = fluido.post(
        "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": [part]}]}
    )
    assert r.status_code == 200
    if isinstance(upstream, FakeVLLM):  # the OpenAI-compatible body carries unknown fields verbatim
        assert upstream.requests[-1]["messages"][0]["content"][0]["x-extra"] == part["x-extra"]


def test_deep_nesting_beyond_the_json_parsers_own_limit_is_a_400(fluido: httpx.Client) -> None:
    raw = b'{"model": "chat", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = fluido.post("/v1/chat/completions", content=raw)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_a_compressed_body_is_a_415_saying_so(fluido: httpx.Client, path: str) -> None:
    raw = gzip.compress(json.dumps({"model": "chat", "messages": HI, "input": "x"}).encode())
    r = fluido.post(
        path, content=raw, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_encoding"
