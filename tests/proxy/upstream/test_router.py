"""Fallback between targets, circuit breaking and timeouts, seen through Fluido on a real socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.config import Config, parse
from tests.conftest import free_port, model_of, running, threaded, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def backup() -> Iterator[FakeVLLM]:
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        fake.reply = "Backup answer."
        yield fake


def two_targets(first: dict[str, Any], first_model: str, second: Fake, **options: Any) -> Config:
    return parse(
        {
            "upstreams": {"first": {**first, **options}, "second": upstream_for(second)},
            "models": {
                "chat": {
                    "targets": [
                        {"upstream": "first", "model": first_model},
                        {"upstream": "second", "model": model_of(second)},
                    ]
                }
            },
        }
    )


def ask(url: str, stream: bool) -> tuple[httpx.Response, str]:
    """POST a chat; returns the response and the text the client received (stream or not)."""
    body = {"model": "chat", "messages": HI, "stream": stream}
    with httpx.Client(base_url=url, timeout=10) as client:
        if not stream:
            r = client.post("/v1/chat/completions", json=body)
            return r, r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else ""
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            r.read()
            text = r.text
    return r, text


def chat_requests(fake: Fake) -> int:
    return sum(1 for body in fake.requests if body.get("messages"))


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_closed_port_falls_back_to_the_next_target(backup: FakeVLLM, stream: bool) -> None:
    dead = {"kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}
    with running(two_targets(dead, "m", backup)) as url:
        r, text = ask(url, stream)
    assert r.status_code == 200 and "Backup" in text
    assert r.headers["x-fluido-upstream"] == "second" and r.headers["x-fluido-fallbacks"] == "1"


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize("fault", ["queue_full", "fail_500", "unknown_model"])
def test_an_upstream_failure_before_the_first_byte_falls_back(
    ollama: FakeOllama, backup: FakeVLLM, stream: bool, fault: str
) -> None:
    model = "not-pulled" if fault == "unknown_model" else model_of(ollama)
    ollama.queue_full = fault == "queue_full"
    ollama.fail_status = 500 if fault == "fail_500" else None
    with running(two_targets(upstream_for(ollama), model, backup)) as url:
        r, text = ask(url, stream)
    assert r.status_code == 200 and "Backup" in text
    assert chat_requests(ollama) == 1 and chat_requests(backup) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_slow_first_token_times_out_and_falls_back(
    ollama: FakeOllama, backup: FakeVLLM, stream: bool
) -> None:
    ollama.delay_first = 3
    limits = {"first_token_timeout": 0.3, "total_timeout": 0.3}
    with running(two_targets(upstream_for(ollama), model_of(ollama), backup, **limits)) as url:
        r, text = ask(url, stream)
    assert r.status_code == 200 and "Backup" in text


def test_nothing_is_retried_after_the_first_byte(ollama: FakeOllama, backup: FakeVLLM) -> None:
    ollama.drop_after = 2
    with running(two_targets(upstream_for(ollama), model_of(ollama), backup)) as url:
        r, text = ask(url, stream=True)
    assert r.status_code == 200 and '"error"' in text and "Backup" not in text
    assert chat_requests(backup) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_an_upstream_400_is_the_clients_error_and_is_not_retried(
    ollama: FakeOllama, backup: FakeVLLM, stream: bool
) -> None:
    ollama.fail_status = 400
    with running(two_targets(upstream_for(ollama), model_of(ollama), backup)) as url:
        r, _ = ask(url, stream)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert chat_requests(backup) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_when_every_target_fails_the_client_gets_the_last_error(
    ollama: FakeOllama, backup: FakeVLLM, stream: bool
) -> None:
    ollama.fail_status = 500
    backup.fail_status = 503
    with running(two_targets(upstream_for(ollama), model_of(ollama), backup)) as url:
        r, _ = ask(url, stream)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert r.headers["x-fluido-fallbacks"] == "2"


def test_an_open_circuit_skips_the_failing_upstream(ollama: FakeOllama, backup: FakeVLLM) -> None:
    ollama.fail_status = 500
    cfg = two_targets(upstream_for(ollama), model_of(ollama), backup, breaker_failures=2, breaker_cooldown=60)
    with running(cfg) as url:
        for _ in range(5):
            _, text = ask(url, stream=False)
            assert "Backup" in text
    assert chat_requests(ollama) == 2, "after two failures the circuit opened"
    assert chat_requests(backup) == 5


def test_after_the_cooldown_a_probe_closes_the_circuit_again(ollama: FakeOllama, backup: FakeVLLM) -> None:
    ollama.fail_status = 500
    cooldown = 1.5  # long enough that the next request surely falls inside it; the probe is waited for
    cfg = two_targets(
        upstream_for(ollama), model_of(ollama), backup, breaker_failures=1, breaker_cooldown=cooldown
    )
    with running(cfg) as url:
        opened = time.monotonic()  # before the failure, so never later than the breaker's own clock
        ask(url, stream=False)
        ollama.fail_status = None
        ask(url, stream=False)
        assert chat_requests(ollama) == 1, "circuit open: skipped"
        # Ask until the first upstream serves again: every request before that goes to the backup.
        r, text = wait_until(
            lambda: (answer := ask(url, stream=False))[0].headers["x-fluido-upstream"] == "first" and answer,
            "the probe after the cooldown",
        )
        probed = time.monotonic()
        assert text == ollama.reply and chat_requests(ollama) == 2, "one probe, and it closed the circuit"
        assert probed - opened >= cooldown, "no probe before the cooldown ended"
        r, _ = ask(url, stream=False)
        assert r.headers["x-fluido-upstream"] == "first" and chat_requests(ollama) == 3, "closed again"


def test_a_stalled_stream_ends_with_a_timeout_error_event(ollama: FakeOllama, backup: FakeVLLM) -> None:
    ollama.delay_between = 2
    with running(two_targets(upstream_for(ollama), model_of(ollama), backup, idle_timeout=0.3)) as url:
        r, text = ask(url, stream=True)
    assert r.status_code == 200 and "upstream_timeout" in text and "[DONE]" not in text
