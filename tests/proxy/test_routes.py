"""The HTTP surface of Fluido on a real socket: validation, errors, the streaming contract, disconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.config import parse
from tests.conftest import config, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fluido(upstream: Fake) -> Iterator[httpx.Client]:
    with running(config(upstream)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def sse(lines: Iterator[str]) -> list[Any]:
    """The data of each SSE event: decoded JSON, or the literal [DONE]."""
    return [
        line[6:] if line == "data: [DONE]" else orjson.loads(line[6:])
        for line in lines
        if line.startswith("data: ")
    ]


def stream_events(client: httpx.Client, **body: Any) -> tuple[httpx.Response, list[Any]]:
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True, **body}
    ) as r:
        return r, sse(r.iter_lines())


def assert_openai_error(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


def test_malformed_json_is_a_400(fluido: httpx.Client) -> None:
    r = fluido.post("/v1/chat/completions", content=b'{"model": "chat", "messages": [')
    assert "not valid JSON" in assert_openai_error(r, 400)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HI}, "model"),
        ({"model": "chat"}, "messages"),
        ({"model": "chat", "messages": "hi"}, "messages"),
        ({"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "chat", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"model": "chat", "messages": HI, "temperature": "hot"}, "temperature"),
        ({"model": "chat", "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": "chat", "messages": HI, "stream": "yes"}, "stream"),
        ({"model": "chat", "messages": HI, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "chat", "messages": HI, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "chat", "messages": HI, "response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_a_missing_or_wrong_typed_field_is_a_400_naming_the_param(
    fluido: httpx.Client, body: dict[str, Any], param: str
) -> None:
    assert_openai_error(fluido.post("/v1/chat/completions", json=body), 400, param=param)


def test_an_unknown_model_is_a_404_model_not_found(fluido: httpx.Client) -> None:
    r = fluido.post("/v1/chat/completions", json={"model": "gpt-9", "messages": HI})
    assert assert_openai_error(r, 404, param="model")["code"] == "model_not_found"


def test_a_body_over_the_limit_is_a_413_declared_or_chunked(upstream: Fake) -> None:
    data = parse({"server": {"max_body_bytes": 2048}, "upstreams": {"up0": upstream_for(upstream)},
                  "models": {"chat": {"targets": [{"upstream": "up0", "model": "m"}]}}})  # fmt: skip
    big = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]})
    with running(data) as url, httpx.Client(base_url=url) as client:
        assert_openai_error(client.post("/v1/chat/completions", content=big), 413)
        chunked = client.post("/v1/chat/completions", content=iter([big[:1000], big[1000:]]))
        assert_openai_error(chunked, 413)
    assert not any("messages" in r for r in upstream.requests), "nothing reached the upstream"


def test_unknown_routes_and_methods_get_json_errors(fluido: httpx.Client) -> None:
    assert_openai_error(fluido.get("/v1/nothing"), 404)
    assert_openai_error(fluido.get("/v1/chat/completions"), 405)


def test_models_lists_the_configured_aliases(fluido: httpx.Client) -> None:
    r = fluido.get("/v1/models")
    assert [m["id"] for m in r.json()["data"]] == ["chat"]


def test_health_answers_without_touching_upstreams(fluido: httpx.Client, upstream: Fake) -> None:
    if isinstance(upstream, FakeOllama):  # start-up preloads the Ollama model: let that land first
        wait_until(lambda: "POST /api/chat" in upstream.hits, "the start-up preload")
    before = list(upstream.hits)
    for _ in range(3):
        assert fluido.get("/health").json() == {"status": "ok"}
    assert upstream.hits == before, "/health reached the upstream"
    # Positive control: /ready does probe the upstream, and the fake records that probe.
    fluido.get("/ready")
    probe = "GET /api/version" if isinstance(upstream, FakeOllama) else "GET /v1/models"
    assert upstream.hits[len(before) :] == [probe]


def test_a_sane_request_id_is_echoed_and_an_odd_one_replaced(fluido: httpx.Client) -> None:
    body = {"model": "chat", "messages": HI}
    assert (
        fluido.post("/v1/chat/completions", json=body, headers={"x-request-id": "abc-123"}).headers[
            "x-request-id"
        ]
        == "abc-123"
    )
    odd = fluido.post("/v1/chat/completions", json=body, headers={"x-request-id": "a b\tc"})
    assert odd.headers["x-request-id"] not in ("", "a b\tc")


def test_chat_returns_an_openai_completion_naming_the_upstream(fluido: httpx.Client, upstream: Fake) -> None:
    r = fluido.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "chat"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": upstream.reply}
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert r.headers["x-fluido-upstream"] == "up0"


def test_stream_sends_role_then_content_then_finish_then_done(fluido: httpx.Client, upstream: Fake) -> None:
    r, events = stream_events(fluido)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == upstream.reply
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks), "usage is stripped when the client did not ask"


def test_stream_ends_with_usage_when_the_client_asks(fluido: httpx.Client, upstream: Fake) -> None:
    _, events = stream_events(fluido, stream_options={"include_usage": True})
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(upstream.reply.split())


@pytest.mark.parametrize("fault", ["drop_after", "error_after", "malformed_after"])
def test_a_failure_after_the_first_byte_is_one_error_event_and_no_done(
    fluido: httpx.Client, upstream: Fake, fault: str
) -> None:
    setattr(upstream, fault, 2)
    r, events = stream_events(fluido)
    assert r.status_code == 200
    assert "[DONE]" not in events
    errors = [e for e in events if "error" in e]
    assert len(errors) == 1 and errors[0] is events[-1]
    assert set(errors[0]["error"]) == {"message", "type", "param", "code"}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "Hello from"


def test_a_failure_before_the_first_byte_is_an_http_error(fluido: httpx.Client, upstream: Fake) -> None:
    upstream.error_after = 0
    with fluido.stream(
        "POST", "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True}
    ) as r:
        r.read()
    assert_openai_error(r, 502)


def test_stream_tool_call_deltas_keep_index_id_type_and_name(fluido: httpx.Client, upstream: Fake) -> None:
    upstream.tool_calls = [
        {"name": "lookup", "arguments": {"q": "a"}},
        {"name": "lookup", "arguments": {"q": "b"}},
    ]
    _, events = stream_events(fluido)
    deltas = [d for e in events[:-1] for d in e["choices"][0]["delta"].get("tool_calls", [])]
    firsts = {}
    for d in deltas:
        if "id" in d:
            assert d["type"] == "function" and d["function"]["name"] == "lookup"
            firsts[d["index"]] = d["id"]
    assert sorted(firsts) == [0, 1] and all(firsts.values())
    args = {i: "".join(d["function"]["arguments"] for d in deltas if d["index"] == i) for i in firsts}
    assert [orjson.loads(args[i]) for i in sorted(args)] == [{"q": "a"}, {"q": "b"}]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def _wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_client_leaving_mid_stream_cancels_the_upstream_within_a_second(
    fluido: httpx.Client, upstream: Fake
) -> None:
    upstream.reply = " ".join(["word"] * 50)
    upstream.delay_between = 0.3
    with fluido.stream(
        "POST", "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True}
    ) as r:
        next(r.iter_lines())
    left = time.monotonic()
    assert _wait_for(lambda: upstream.disconnects == 1, 1.0)
    assert time.monotonic() - left < 1.0


def test_a_client_leaving_before_the_first_token_cancels_the_upstream(
    fluido: httpx.Client, upstream: Fake
) -> None:
    upstream.delay_first = 5
    with pytest.raises(httpx.ReadTimeout):
        fluido.post("/v1/chat/completions", json={"model": "chat", "messages": HI}, timeout=0.3)
    assert _wait_for(lambda: upstream.disconnects == 1, 1.0)


def test_embeddings_are_routed_by_alias(fluido: httpx.Client) -> None:
    r = fluido.post("/v1/embeddings", json={"model": "chat", "input": "hello"})
    data = r.json()["data"]
    assert len(data) == 1 and len(data[0]["embedding"]) == 8
    assert_openai_error(fluido.post("/v1/embeddings", json={"model": "chat", "input": 5}), 400, param="input")
