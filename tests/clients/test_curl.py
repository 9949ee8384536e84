"""curl, the way the README shows it."""

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
