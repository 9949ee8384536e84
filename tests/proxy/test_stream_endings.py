"""How a reply ends decides whether it is a success: a stream that stops without its finish (OpenAI's
``finish_reason``, Ollama's ``done: true``) is broken, and a reply that finished without a word is not."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse
from tests.conftest import model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]
# Deterministic, so the response cache would keep the reply if Fluido took it for a success.
BODY = {"model": "chat", "messages": HI, "temperature": 0}


def cached_config(fake: Fake) -> Any:
    return parse(
        {
            "upstreams": {"up0": upstream_for(fake)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(fake)}]}},
            "cache": {"enabled": True},
        }
    )


def sse(text: str) -> list[Any]:
    return [
        line[6:] if line == "data: [DONE]" else orjson.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def stream(client: httpx.Client, **body: Any) -> tuple[httpx.Response, list[Any]]:
    with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True, **body}) as r:
        r.read()
    return r, sse(r.text)


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def access_records(sink: io.BytesIO, count: int) -> list[dict[str, Any]]:
    """The access-log records, once ``count`` of them have been written (the writer is a thread)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
        records = [r for r in lines if r.get("event") == "request"]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def chats(fake: Fake) -> int:
    return sum(1 for body in fake.requests if body.get("messages"))


def test_a_stream_that_stops_without_its_finish_is_one_error_event_counted_and_never_cached(
    upstream: Fake,
) -> None:
    upstream.end_after = 2  # vLLM: [DONE] without a finish_reason; Ollama: EOF without done:true
    sink = io.BytesIO()
    with running(cached_config(upstream), log_sink=sink) as url, httpx.Client(base_url=url, timeout=10) as c:
        r, events = stream(c)
        again, events_again = stream(c)
        metrics = c.get("/metrics").text
        records = access_records(sink, 2)
    assert r.status_code == 200
    assert "[DONE]" not in events
    errors = [e for e in events if "error" in e]
    assert len(errors) == 1 and errors[0] is events[-1]
    assert errors[0]["error"]["code"] == "upstream_error"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "Hello from"
    assert not any(e["choices"][0]["finish_reason"] for e in events[:-1]), "no finish was invented"
    # Counted as a failure, and nothing kept: the second request reached the upstream again.
    assert [rec["error_code"] for rec in records] == ["upstream_error", "upstream_error"]
    assert metric(metrics, "fluido_stream_errors_total", model="chat", code="upstream_error") == 2
    assert again.headers["x-fluido-cache"] == "miss" and "[DONE]" not in events_again
    assert chats(upstream) == 2


def test_positive_control_a_finished_stream_is_a_success_and_is_cached(upstream: Fake) -> None:
    sink = io.BytesIO()
    with running(cached_config(upstream), log_sink=sink) as url, httpx.Client(base_url=url, timeout=10) as c:
        _, events = stream(c)
        again, _ = stream(c)
        metrics = c.get("/metrics").text
        records = access_records(sink, 2)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert [rec["error_code"] for rec in records] == ["", ""]
    assert metric(metrics, "fluido_stream_errors_total") == 0
    assert again.headers["x-fluido-cache"] == "hit" and chats(upstream) == 1


def test_a_stream_cut_before_any_output_is_an_http_error_not_an_empty_success(upstream: Fake) -> None:
    upstream.end_after = 0
    with running(cached_config(upstream)) as url, httpx.Client(base_url=url, timeout=10) as c:
        r, _ = stream(c)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"


@pytest.mark.parametrize("stream_it", [False, True], ids=["chat", "stream"])
def test_a_reply_that_finished_without_content_is_a_200_with_its_finish_reason(
    upstream: Fake, stream_it: bool
) -> None:
    upstream.reply = ""  # Ollama then sends nothing but its done:true line: the finish is the first event
    with running(cached_config(upstream)) as url, httpx.Client(base_url=url, timeout=10) as c:
        if stream_it:
            r, events = stream(c, max_tokens=4)
            assert r.status_code == 200 and events[-1] == "[DONE]"
            chunks = events[:-1]
            assert "".join(e["choices"][0]["delta"].get("content", "") for e in chunks) == ""
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        else:
            r = c.post("/v1/chat/completions", json={**BODY, "max_tokens": 4})
            assert r.status_code == 200
            choice = r.json()["choices"][0]
            assert choice["message"]["content"] == "" and choice["finish_reason"] == "stop"


def test_an_unfinished_native_n_stream_is_broken_even_when_one_choice_finished(vllm: FakeVLLM) -> None:
    """With several choices in one stream, every one that started must finish."""
    vllm.end_after = 5  # n=2 interleaves the choices: both have started, neither has finished
    cfg = parse(
        {
            "upstreams": {"up0": upstream_for(vllm, n_choices="native")},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(vllm)}]}},
        }
    )
    with running(cfg) as url, httpx.Client(base_url=url, timeout=10) as c:
        _, events = stream(c, n=2)
    assert "[DONE]" not in events and "error" in events[-1]
