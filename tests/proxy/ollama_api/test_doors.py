"""One chain behind two doors: a request through Ollama's door and its twin through the OpenAI door share
the cache entry, the rate limits, the API keys, and appear alike in the access log and the metrics."""

from __future__ import annotations

import io
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from proxy.config import parse
from tests.conftest import VLLM_MODEL, config, model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.proxy.observe.test_access import wait_records
from tests.proxy.observe.test_metrics import samples
from tests.proxy.ollama_api.test_ollama_client import HI

Fake = FakeOllama | FakeVLLM
QUESTION = [{"role": "user", "content": "What is the boiling point of water?"}]
ENV = {"TUTOR_KEY": "sk-tutor"}


def chats(fake: Fake) -> int:
    return sum(1 for r in fake.requests if r.get("messages"))


def openai_chat(url: str, stream: bool = False) -> httpx.Response:
    body = {"model": "chat", "messages": QUESTION, "temperature": 0, "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body)


def ollama_chat(url: str, stream: bool = False, path: str = "/api/chat") -> httpx.Response:
    body: dict[str, Any] = {"model": "chat:latest", "options": {"temperature": 0}, "stream": stream}
    if path == "/api/chat":
        body["messages"] = QUESTION
    else:
        body["prompt"] = QUESTION[0]["content"]
    return httpx.post(f"{url}{path}", json=body)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_ollama_door_hits_the_entry_the_openai_door_filled(upstream: Fake, stream: bool) -> None:
    with running(config(upstream)) as url:
        first = openai_chat(url)
        assert first.headers["x-fluido-cache"] == "miss"
        for path in ("/api/chat", "/api/generate"):
            twin = ollama_chat(url, stream, path)
            assert twin.status_code == 200 and twin.headers["x-fluido-cache"] == "hit", path
            assert upstream.reply in twin.text
        assert chats(upstream) == 1


def test_the_openai_door_hits_the_entry_the_ollama_door_filled(upstream: Fake) -> None:
    with running(config(upstream)) as url, OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        assert ollama_chat(url, stream=True).headers["x-fluido-cache"] == "miss"
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=QUESTION, temperature=0)  # type: ignore[arg-type]
        assert raw.headers["x-fluido-cache"] == "hit"
        assert raw.parse().choices[0].message.content == upstream.reply
        assert chats(upstream) == 1


def test_a_different_request_is_not_a_hit(upstream: Fake) -> None:
    """The positive control of the two tests above: the twin hits because it is the same request."""
    with running(config(upstream)) as url:
        openai_chat(url)
        body = {"model": "chat", "messages": QUESTION, "options": {"temperature": 0, "num_predict": 5}}
        assert httpx.post(f"{url}/api/chat", json=body).headers["x-fluido-cache"] == "miss"
        assert chats(upstream) == 2


def test_both_doors_count_against_one_rate_limit(vllm: FakeVLLM) -> None:
    cfg = parse({
        "keys": {"tutor": {"key_env": "TUTOR_KEY", "rpm": 3}},
        "cache": {"enabled": False},
        "upstreams": {"up0": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
    }, ENV)  # fmt: skip
    key = {"authorization": "Bearer sk-tutor"}
    with running(cfg) as url, ollama.Client(host=url, headers=key) as client:
        openai = OpenAI(base_url=url + "/v1", api_key="sk-tutor", max_retries=0)
        openai.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
        client.chat(model="chat", messages=HI)
        reply = httpx.post(f"{url}/api/generate", json={"model": "chat", "prompt": "hi"}, headers=key)
        assert reply.status_code == 200
        assert reply.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="chat", messages=HI)
        assert info.value.status_code == 429
        refused = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI}, headers=key
        )
        assert refused.status_code == 429 and "retry-after" in refused.headers
        openai.close()
    assert chats(vllm) == 3


def test_api_keys_guard_the_ollama_door(vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse({
        "keys": {"tutor": {"key_env": "TUTOR_KEY"}},
        "upstreams": {"up0": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
    }, ENV)  # fmt: skip
    with running(cfg) as url:
        for method, path in (("POST", "/api/chat"), ("GET", "/api/tags"), ("POST", "/api/embed")):
            refused = httpx.request(method, f"{url}{path}", json={"model": "chat", "messages": HI})
            assert refused.status_code == 401 and "API key" in refused.json()["error"]
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url).text == "Ollama is running"  # the probe stays open
        with ollama.Client(host=url) as anonymous, pytest.raises(ollama.ResponseError) as info:
            anonymous.chat(model="chat", messages=HI)
        assert info.value.status_code == 401
        monkeypatch.setenv("OLLAMA_API_KEY", "sk-tutor")  # the client's own way to send a key
        with ollama.Client(host=url) as client:
            assert client.chat(model="chat", messages=HI).message.content == vllm.reply


def test_both_doors_appear_alike_in_the_access_log_and_the_metrics(upstream: Fake) -> None:
    sink = io.BytesIO()
    cfg = parse({
        "cache": {"enabled": False},
        "upstreams": {"up0": upstream_for(upstream)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(upstream)}]}},
    })  # fmt: skip
    with running(cfg, log_sink=sink) as url:
        assert httpx.head(url).status_code == 200  # Ollama clients' probe: not traffic, not logged
        assert (
            httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI}).status_code
            == 200
        )
        assert httpx.post(f"{url}/api/chat", json={"model": "chat", "messages": HI}).status_code == 200
        assert httpx.post(f"{url}/api/generate", json={"model": "chat", "prompt": "hi"}).status_code == 200
        records = wait_records(sink, 3)
        metrics = httpx.get(f"{url}/metrics").text
    assert [r["route"] for r in records] == ["/v1/chat/completions", "/api/chat", "/api/generate"]
    for record in records:
        assert (record["model"], record["upstream"], record["status"]) == ("chat", "up0", 200)
        assert record["completion_tokens"] == len(upstream.reply.split())
    assert [r["stream"] for r in records] == [False, True, True]  # Ollama streams by default
    for route in ("/v1/chat/completions", "/api/chat", "/api/generate"):
        labels = {"route": route, "model": "chat", "status": "200", "upstream": "up0"}
        assert samples(metrics, "fluido_requests_total", **labels) == 1, route
    assert samples(metrics, "fluido_tokens_total", model="chat", direction="out") == 3 * len(
        upstream.reply.split()
    )
