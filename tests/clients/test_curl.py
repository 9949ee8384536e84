"""curl, the way the README shows it: SSE from the OpenAI door, NDJSON from the Ollama door."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import config, running
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

Fake = FakeOllama | FakeVLLM
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def url(upstream: Fake) -> Iterator[str]:
    with running(config(upstream)) as base:
        yield base


def curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def test_curl_streams_sse_without_a_content_type_header(url: str, upstream: Fake) -> None:
    body = '{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true}'
    out = curl("-N", f"{url}/v1/chat/completions", "-d", body)
    events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == upstream.reply


def test_curl_gets_a_json_completion(url: str, upstream: Fake) -> None:
    out = curl(f"{url}/v1/chat/completions", "-H", "content-type: application/json",
               "-d", '{"model":"chat","messages":[{"role":"user","content":"hi"}]}')  # fmt: skip
    assert orjson.loads(out)["choices"][0]["message"]["content"] == upstream.reply


def test_curl_sees_the_status_of_an_error(url: str) -> None:
    out = curl("-o", "/dev/null", "-w", "%{http_code}", f"{url}/v1/chat/completions", "-d", "{not json")
    assert out == "400"


def test_curl_streams_ollama_ndjson_by_default(url: str, upstream: Fake) -> None:
    out = curl("-N", f"{url}/api/chat", "-d", '{"model":"chat","messages":[{"role":"user","content":"hi"}]}')
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == upstream.reply
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] == len(upstream.reply.split())


def test_curl_gets_one_ollama_object_without_streaming(url: str, upstream: Fake) -> None:
    out = curl(f"{url}/api/generate", "-d", '{"model":"chat","prompt":"hi","stream":false}')
    body = orjson.loads(out)
    assert body["response"] == upstream.reply and body["done"] is True and body["model"] == "chat"


def test_curl_sees_ollamas_probe_and_error_shape(url: str) -> None:
    assert curl(url) == "Ollama is running"
    assert curl("-I", url).startswith("HTTP/1.1 200")
    out = curl("-w", "\n%{http_code}", f"{url}/api/chat", "-d", '{"model":"nope","messages":[]}')
    body, status = out.rsplit("\n", 1)
    assert status == "404" and orjson.loads(body) == {"error": "model 'nope' not found"}
