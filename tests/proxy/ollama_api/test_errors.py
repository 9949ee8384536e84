"""Errors through Ollama's door: Ollama's shape and statuses, and broken streams that end in an error line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import orjson
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, config, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def url(upstream: Fake) -> Iterator[str]:
    with running(config(upstream)) as base:
        yield base


def post(url: str, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(f"{url}{path}", content=content, timeout=10)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in response.text.splitlines() if line]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        ("/api/chat", {"messages": HI}, 400, "model is required"),
        ("/api/chat", {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        (
            "/api/generate",
            {"model": "chat", "prompt": "x", "raw": True},
            400,
            "raw prompts are not supported",
        ),
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/embed", {"model": "chat", "input": [1]}, 400, "input must be"),
        ("/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
    ],
)
def test_bad_requests_get_ollamas_error_shape(
    url: str, path: str, body: Any, status: int, message: str
) -> None:
    response = post(url, path, body)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and message in response.json()["error"]


def test_a_body_over_the_limit_is_a_413(upstream: Fake) -> None:
    cfg = parse({"upstreams": {"up0": upstream_for(upstream)}, "server": {"max_body_bytes": 1024},
                 "models": {"chat": {"targets": [{"upstream": "up0", "model": "m"}]}}})  # fmt: skip
    with running(cfg) as url:
        response = post(
            url, "/api/chat", {"model": "chat", "messages": [{"role": "user", "content": "x" * 4000}]}
        )
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/sha256:abc"]
)
def test_model_management_routes_answer_json_501(url: str, path: str) -> None:
    for method in ("POST", "DELETE", "GET"):
        response = httpx.request(method, f"{url}{path}", json={"model": "chat"})
        assert response.status_code == 501
        assert response.headers["content-type"].startswith("application/json")
        assert "models are managed on the upstream servers" in response.json()["error"]


def test_an_unknown_api_path_is_a_json_404(url: str) -> None:
    response = httpx.get(f"{url}/api/nothing-here")
    assert response.status_code == 404 and set(response.json()) == {"error"}
    wrong_method = httpx.get(f"{url}/api/chat")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}


def test_an_upstream_that_is_busy_is_a_503(url: str, upstream: Fake) -> None:
    upstream.fail_status = 503
    response = post(url, "/api/chat", {"model": "chat", "messages": HI})
    assert response.status_code == 503 and set(response.json()) == {"error"}


@pytest.mark.parametrize("fault", ["drop_after", "error_after"])
def test_a_stream_that_breaks_ends_with_an_error_line_and_no_done_line(
    url: str, upstream: Fake, fault: str
) -> None:
    setattr(upstream, fault, 2)
    with httpx.stream("POST", f"{url}/api/chat", json={"model": "chat", "messages": HI}) as response:
        assert response.status_code == 200  # committed: the first lines went out
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert [line["message"]["content"] for line in lines[:-1]] == ["Hello", " from"]
    assert set(lines[-1]) == {"error"} and lines[-1]["error"]
    assert not any(line.get("done") for line in lines)


def test_the_ollama_client_raises_on_a_broken_stream(url: str, upstream: Fake) -> None:
    upstream.drop_after = 2
    seen: list[str] = []
    with ollama.Client(host=url) as client, pytest.raises(ollama.ResponseError):
        for part in client.generate(model="chat", prompt="hi", stream=True):
            seen.append(part.response)
    assert seen == ["Hello", " from"]


def test_a_stream_that_fails_before_its_first_line_is_an_http_error(url: str, upstream: Fake) -> None:
    upstream.error_after = 0
    response = post(url, "/api/chat", {"model": "chat", "messages": HI})
    assert response.status_code >= 500 and set(response.json()) == {"error"}


def test_a_rate_limit_is_a_429_with_retry_after(vllm: FakeVLLM) -> None:
    cfg = parse({
        "limits": {"rpm": 1},
        "upstreams": {"up0": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
    })  # fmt: skip
    with running(cfg) as url, ollama.Client(host=url) as client:
        client.chat(model="chat", messages=HI)
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="chat", messages=HI)
        assert info.value.status_code == 429 and "Rate limit" in info.value.error
        response = post(url, "/api/generate", {"model": "chat", "prompt": "hi"})
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert set(response.json()) == {"error"}


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_client_leaving_mid_stream_cancels_the_upstream(url: str, upstream: Fake) -> None:
    upstream.reply = " ".join(["word"] * 50)
    upstream.delay_between = 0.3
    with httpx.stream("POST", f"{url}/api/generate", json={"model": "chat", "prompt": "hi"}) as response:
        assert orjson.loads(next(response.iter_lines()))["response"] == "word"
        assert upstream.disconnects == 0
    assert wait_for(lambda: upstream.disconnects == 1, 1.0)
