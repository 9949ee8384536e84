"""The circuit opens on the upstream's faults only, never on what one request caused; its probe after the
cool-down is a real request, and a fallback target serves everyone meanwhile. Real sockets throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.config import Config, parse
from tests.conftest import free_port, model_of, running, threaded, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

HI = [{"role": "user", "content": "hi"}]
BREAKER = {"breaker_failures": 2, "breaker_cooldown": 60}


@pytest.fixture
def backup() -> Iterator[FakeVLLM]:
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        fake.reply = "Backup answer."
        yield fake


def one_target(first: dict[str, Any], model: str) -> Config:
    return parse(
        {
            "upstreams": {"first": first},
            "models": {"chat": {"targets": [{"upstream": "first", "model": model}]}},
        }
    )


def two_targets(first: dict[str, Any], model: str, second: FakeVLLM) -> Config:
    targets = [{"upstream": "first", "model": model}, {"upstream": "second", "model": model_of(second)}]
    return parse(
        {
            "upstreams": {"first": first, "second": upstream_for(second)},
            "models": {"chat": {"targets": targets}},
        }
    )


def post(url: str, **body: Any) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions", json={"model": "chat", "messages": HI, **body}, timeout=10
    )


def chats(fake: FakeOllama | FakeVLLM) -> int:
    return sum(1 for body in fake.requests if body.get("messages"))


def test_an_upstreams_validation_error_given_as_a_5xx_is_a_400_and_never_opens_the_circuit(
    vllm: FakeVLLM,
) -> None:
    vllm.fail_status, vllm.fail_type = 500, "invalid_request_error"
    with running(one_target(upstream_for(vllm, **BREAKER), model_of(vllm))) as url:
        refused = [post(url) for _ in range(4)]
        vllm.fail_status = None
        served = post(url)
    assert {r.status_code for r in refused} == {400}
    assert all(r.json()["error"]["type"] == "invalid_request_error" for r in refused)
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"] == vllm.reply


def test_request_caused_refusals_of_every_kind_leave_the_circuit_closed(vllm: FakeVLLM) -> None:
    """A 400, a 404 for a model the upstream lacks, and fewer choices than asked: none is an outage."""
    cfg = one_target(upstream_for(vllm, n_choices="native", **BREAKER), model_of(vllm))
    with running(cfg) as url:
        vllm.fail_status = 400
        assert {post(url).status_code for _ in range(3)} == {400}
        vllm.fail_status, vllm.honours_n = None, False
        assert {post(url, n=2).status_code for _ in range(3)} == {502}
        served = post(url)
    assert served.status_code == 200, "the circuit is still closed"


def test_positive_control_a_plain_5xx_opens_the_circuit(vllm: FakeVLLM) -> None:
    vllm.fail_status = 500
    with running(one_target(upstream_for(vllm, **BREAKER), model_of(vllm))) as url:
        statuses = [post(url).status_code for _ in range(4)]
    assert statuses == [502, 502, 503, 503] and chats(vllm) == 2


@pytest.mark.parametrize("fault", ["refused", "reset", "timeout", "cut_stream"])
def test_upstream_faults_open_the_circuit_and_the_fallback_keeps_serving(
    ollama: FakeOllama, backup: FakeVLLM, fault: str
) -> None:
    first = upstream_for(ollama, first_token_timeout=0.3, total_timeout=0.3, **BREAKER)
    if fault == "refused":
        first["url"] = f"http://127.0.0.1:{free_port()}"
    ollama.drop_after = 0 if fault == "reset" else None
    ollama.delay_first = 2 if fault == "timeout" else 0
    ollama.end_after = 0 if fault == "cut_stream" else None
    with running(two_targets(first, model_of(ollama), backup)) as url:
        replies = [post(url, stream=fault == "cut_stream") for _ in range(5)]
    assert all(r.status_code == 200 and "Backup" in r.text for r in replies)
    assert chats(ollama) == (0 if fault == "refused" else 2), "after two faults the circuit opened"
    assert chats(backup) == 5


def test_the_half_open_probe_is_a_real_request_and_the_fallback_serves_while_it_runs(
    ollama: FakeOllama, backup: FakeVLLM
) -> None:
    first = upstream_for(ollama, breaker_failures=1, breaker_cooldown=0.3)
    with running(two_targets(first, model_of(ollama), backup)) as url:
        ollama.fail_status = 500
        assert "Backup" in post(url).text  # one fault: open
        ollama.fail_status = None
        assert "Backup" in post(url).text and chats(ollama) == 1, "open: skipped"
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # the cool-down, measured by the clock the breaker reads
            time.sleep(0.05)
        ollama.delay_first = 1.0
        probe: list[httpx.Response] = []
        runner = threading.Thread(target=lambda: probe.append(post(url, temperature=0.5)))
        runner.start()
        waited = time.monotonic() + 5
        while chats(ollama) < 2 and time.monotonic() < waited:
            time.sleep(0.01)
        meanwhile = post(url)  # the probe holds the half-open circuit: this one goes to the fallback
        runner.join()
        ollama.delay_first = 0
        after = post(url)
    assert probe[0].status_code == 200 and probe[0].json()["choices"][0]["message"]["content"] == ollama.reply
    assert probe[0].headers["x-fluido-upstream"] == "first"
    assert meanwhile.headers["x-fluido-upstream"] == "second"
    assert after.headers["x-fluido-upstream"] == "first", "the probe's success closed the circuit"
