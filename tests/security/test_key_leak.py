"""Client API keys never leave the request they came in: not in logs, error bodies, headers, metrics or anything
sent upstream.

A real ``fluido serve`` process runs a representative set of requests (success, stream, cache hit, 401 with
wrong and near-miss keys, 403, 429, upstream failures before and during a stream, embeddings, admin routes)
with known keys. Then every output is searched for every key: the process's stdout and stderr (structured
logs and the access log), each response's status line, headers and body, /metrics, /ready, and every body and
header the fake upstreams received. The search is shown to work on what the clients sent, which holds the keys.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, threaded
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.processes import Fluido

UPSTREAM_KEY = "upstream-secret-" + secrets.token_hex(8)  # Fluido's own key for vLLM: it must reach vLLM
KEYS = {
    "alpha": "sk-alpha-" + secrets.token_hex(16),
    "beta": "sk-beta-" + secrets.token_hex(16),
    "admin": "sk-admin-" + secrets.token_hex(16),
}
# Wrong keys a client might send: unknown, one character off, the right key under another scheme.
WRONG = ["sk-wrong-" + secrets.token_hex(16), KEYS["alpha"][:-1] + "x", KEYS["alpha"] + "0"]


class Transcript:
    """Everything the clients sent and everything that came back to them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.client = httpx.Client(timeout=30)

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        r = self.client.request(method, self.base + path, headers=headers, **kwargs)
        self.sent.append(repr(r.request.headers.raw).encode() + r.request.content)
        self.received.append(f"HTTP {r.status_code}\n{r.headers.raw!r}\n".encode() + r.content)
        return r

    def chat(
        self, key: str | None, text: str, stream: bool = False, model: str = "chat", **extra: Any
    ) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}
        return self.call("POST", "/v1/chat/completions", key, json=body)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeVLLM, FakeOllama]]:
    with threaded(FakeVLLM(api_key=UPSTREAM_KEY)) as vllm, threaded(FakeOllama()) as ollama:
        assert isinstance(vllm, FakeVLLM) and isinstance(ollama, FakeOllama)
        yield vllm, ollama


def leak_config(vllm: FakeVLLM, ollama: FakeOllama) -> dict[str, Any]:
    return {
        "log": {"level": "debug"},
        "cache": {"semantic": {"enabled": False}},
        "keys": {
            "alpha": {"key_env": "KEY_ALPHA", "tpm": 1_000_000},
            "beta": {"key_env": "KEY_BETA", "rpm": 2},
            "admin": {"key_env": "KEY_ADMIN", "admin": True},
        },
        "upstreams": {
            "vllm": {
                "kind": "openai",
                "url": vllm.url + "/v1",
                "api_key_env": "VLLM_KEY",
                "breaker_failures": 100,
            },
            "ollama": {"kind": "ollama", "url": ollama.url, "breaker_failures": 100},
        },
        "models": {
            "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
            "local": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL}]},
        },
    }


def exercise(t: Transcript, vllm: FakeVLLM, ollama: FakeOllama) -> list[int]:
    """The representative run; returns every status seen, so the test can show each case happened."""
    alpha, beta, admin = KEYS["alpha"], KEYS["beta"], KEYS["admin"]
    statuses = [
        t.chat(alpha, "hello").status_code,
        t.chat(alpha, "hello stream", stream=True).status_code,
        t.chat(alpha, "hello ollama", model="local").status_code,
        t.chat(alpha, "hello ollama stream", stream=True, model="local").status_code,
        t.chat(alpha, "cached", temperature=0).status_code,
        t.chat(alpha, "cached", temperature=0).status_code,  # a hit
        t.chat(alpha, "cached", stream=True, temperature=0).status_code,  # a hit, replayed as a stream
        t.call("POST", "/v1/embeddings", alpha, json={"model": "chat", "input": "embed me"}).status_code,
        t.call("GET", "/v1/models", alpha).status_code,
        t.chat(alpha, "bad request", temperature="hot").status_code,
        t.chat(alpha, "unknown model", model="nope").status_code,
    ]
    for wrong in WRONG:
        statuses.append(t.chat(wrong, "wrong key").status_code)
    statuses.append(
        t.call("POST", "/v1/chat/completions", headers={"authorization": f"Basic {alpha}"}).status_code
    )
    statuses.append(t.call("POST", "/v1/chat/completions", headers={"x-api-key": alpha}, json={}).status_code)
    statuses += [t.chat(beta, f"limited {i}").status_code for i in range(4)]  # rpm 2: 429s
    statuses.append(t.call("POST", "/admin/cache/purge", alpha).status_code)  # 403: not an admin
    statuses.append(t.call("POST", "/admin/cache/purge", admin).status_code)
    statuses.append(t.call("GET", "/admin/runtime", admin).status_code)
    # Upstream failures: an error status, a stream broken after its first chunk, a dropped connection.
    vllm.fail_status = 500
    statuses.append(t.chat(alpha, "upstream 500").status_code)
    statuses.append(t.chat(alpha, "upstream 500 stream", stream=True).status_code)
    vllm.fail_status = None
    vllm.error_after = 2
    statuses.append(t.chat(alpha, "broken stream", stream=True).status_code)
    vllm.error_after = None
    ollama.drop_after = 1
    statuses.append(t.chat(alpha, "dropped stream", stream=True, model="local").status_code)
    ollama.drop_after = None
    vllm.fail_status = 401  # the upstream refuses Fluido's own key
    statuses.append(t.chat(alpha, "upstream 401").status_code)
    vllm.fail_status = None
    for path in ("/metrics", "/ready", "/health"):
        statuses.append(t.call("GET", path).status_code)
    return statuses


def test_no_client_key_appears_in_any_output_of_a_run(
    tmp_path: Path, fakes: tuple[FakeVLLM, FakeOllama]
) -> None:
    vllm, ollama = fakes
    env = {
        "KEY_ALPHA": KEYS["alpha"],
        "KEY_BETA": KEYS["beta"],
        "KEY_ADMIN": KEYS["admin"],
        "VLLM_KEY": UPSTREAM_KEY,
    }
    server = Fluido(tmp_path, leak_config(vllm, ollama), env)
    server.start()
    transcript = Transcript(server.url)
    try:
        statuses = exercise(transcript, vllm, ollama)
    finally:
        transcript.client.close()
        # A clean stop flushes the log writer; uvicorn exits by re-raising the SIGTERM it handled.
        assert server.stop() in (0, -signal.SIGTERM)
    # Every kind of outcome happened (so every path that could leak ran).
    assert {200, 400, 401, 403, 404, 429, 502} <= set(statuses), statuses

    outputs = {
        "stdout (logs, access log)": server.log.read_bytes(),
        "stderr": server.err.read_bytes(),
        "responses": b"\n".join(transcript.received),
        "vLLM fake received": repr((vllm.requests, vllm.headers)).encode(),
        "Ollama fake received": repr((ollama.requests, ollama.headers)).encode(),
    }
    assert b'"event":"request"' in outputs["stdout (logs, access log)"]  # the access log was captured
    assert b"fluido_requests_total" in outputs["responses"]  # so was /metrics
    assert len(vllm.requests) >= 5 and len(ollama.requests) >= 2
    secrets_used = [*KEYS.values(), *WRONG]
    sent = b"\n".join(transcript.sent)
    # Positive control: the search finds every key where it must be, in what the clients sent.
    assert all(key.encode() in sent for key in secrets_used)
    # ... and Fluido's own upstream key where it belongs: in what vLLM received, and nowhere else.
    assert UPSTREAM_KEY.encode() in outputs["vLLM fake received"]
    leaks = [
        f"{key[:12]}... in {where}"
        for key in secrets_used
        for where, text in outputs.items()
        if key.encode() in text
    ]
    leaks += [
        f"upstream key in {w}"
        for w, text in outputs.items()
        if w != "vLLM fake received" and UPSTREAM_KEY.encode() in text
    ]
    total = sum(len(text) for text in outputs.values())
    print(
        f"\nKey leak search: {len(secrets_used)} client keys in {total / 1024:.0f} KiB of output from {len(statuses)} requests; leaks: {leaks or 'none'}"
    )
    assert not leaks
