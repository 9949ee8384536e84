"""GET /metrics: what each request adds, bounded labels, and correct sums across worker processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse
from tests.conftest import VLLM_MODEL, config, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.serve import serving, vllm_config

HI = [{"role": "user", "content": "hi"}]
REPO = Path(__file__).resolve().parents[3]


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def client(vllm: FakeVLLM) -> Iterator[httpx.Client]:
    with running(config(vllm)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_chat_adds_its_request_latency_and_tokens(
    client: httpx.Client, vllm: FakeVLLM, stream: bool
) -> None:
    client.post("/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": stream}).read()
    text = client.get("/metrics").text
    route = {"route": "/v1/chat/completions", "model": "chat"}
    assert samples(text, "fluido_requests_total", status="200", upstream="up0", **route) == 1
    assert samples(text, "fluido_request_duration_seconds_count", **route) == 1
    assert (
        samples(text, "fluido_time_to_first_token_seconds_count", model="chat", stream=str(stream).lower())
        == 1
    )
    assert samples(text, "fluido_upstream_duration_seconds_count", upstream="up0") == 1
    assert samples(text, "fluido_tokens_total", model="chat", direction="out") == len(vllm.reply.split())
    assert samples(text, "fluido_completion_tokens_count", model="chat") == 1
    assert samples(text, "fluido_requests_in_flight") == 0, "a scrape does not count itself"


def test_model_labels_come_from_configured_aliases_only(client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json={"model": "user-1234-private", "messages": HI})
    text = client.get("/metrics").text
    assert "user-1234-private" not in text
    assert samples(text, "fluido_requests_total", model="unknown", status="404") == 1


def test_failed_attempts_and_fallbacks_are_counted(ollama: FakeOllama, vllm: FakeVLLM) -> None:
    ollama.fail_status = 500
    cfg = parse(
        {
            "upstreams": {"first": upstream_for(ollama, breaker_failures=2), "second": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "first", "model": "llama3.2:1b"},
                                            {"upstream": "second", "model": VLLM_MODEL}]}},
        }
    )  # fmt: skip
    with running(cfg) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
        text = client.get("/metrics").text
    assert samples(text, "fluido_upstream_errors_total", upstream="first", kind="upstream_error") == 2
    assert samples(text, "fluido_fallbacks_total", model="chat") == 2
    assert samples(text, "fluido_upstream_circuit_state", upstream="first") == 2, "open after two failures"
    assert samples(text, "fluido_upstream_circuit_state", upstream="second") == 0


def test_in_flight_counts_requests_being_handled(client: httpx.Client, vllm: FakeVLLM) -> None:
    vllm.delay_first = 0.5
    worker = threading.Thread(
        target=lambda: client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    )
    worker.start()
    time.sleep(0.2)
    during = samples(client.get("/metrics").text, "fluido_requests_in_flight")
    worker.join()
    assert during == 1, "the slow chat"
    assert samples(client.get("/metrics").text, "fluido_requests_in_flight") == 0


def test_metrics_from_several_workers_add_up(vllm: FakeVLLM, tmp_path: Path) -> None:
    config = vllm_config(tmp_path / "config.toml", vllm.url, "[log]\naccess_log = false\n")
    with serving(config, workers=2) as base:
        for _ in range(12):  # each on a new connection, so both workers take some
            httpx.post(f"{base}/v1/chat/completions", json={"model": "chat", "messages": HI})
        totals = [
            samples(httpx.get(f"{base}/metrics").text, "fluido_requests_total", route="/v1/chat/completions")
            for _ in range(4)
        ]
    assert totals == [12, 12, 12, 12], "whichever worker answers the scrape, the sum is every worker's"
