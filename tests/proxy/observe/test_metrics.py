"""GET /metrics: what each request adds, bounded labels, and correct sums across worker processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse
from tests.conftest import VLLM_MODEL, config, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.serve import serving, vllm_config
from tests.support.wait import wait_until

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
    vllm.gate = threading.Event()  # the chat stays in flight until the scrape is done
    worker = threading.Thread(
        target=lambda: client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    )
    worker.start()
    wait_until(lambda: vllm.requests, "the chat to reach the upstream")
    during = samples(client.get("/metrics").text, "fluido_requests_in_flight")
    vllm.gate.set()
    worker.join()
    assert during == 1, "the slow chat"
    assert samples(client.get("/metrics").text, "fluido_requests_in_flight") == 0


def chats_per_worker(directory: Path) -> dict[str, float]:
    """Each worker's own count of chat requests, read from the file it writes in the multiprocess directory."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, *_ = orjson.loads(key)
            if sample == "fluido_requests_total" and labels.get("route") == "/v1/chat/completions":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def test_metrics_from_several_workers_add_up(vllm: FakeVLLM, tmp_path: Path) -> None:
    config = vllm_config(tmp_path / "config.toml", vllm.url, "[log]\naccess_log = false\n")
    directory = tmp_path / "metrics"
    directory.mkdir()
    sent = 0

    def both_served() -> bool:
        nonlocal sent
        # Each on a new connection, so the kernel hands it to either worker; until both have served.
        httpx.post(f"{base}/v1/chat/completions", json={"model": "chat", "messages": HI})
        sent += 1
        return sent >= 12 and len(chats_per_worker(directory)) == 2

    with serving(config, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as base:
        wait_until(both_served, "both workers to serve chats", 60)
        # A worker counts a request as it ends, which can be just after its client has the answer.
        wait_until(lambda: sum(chats_per_worker(directory).values()) == sent, "every chat to be counted")
        per_worker = chats_per_worker(directory)
        totals = [
            samples(httpx.get(f"{base}/metrics").text, "fluido_requests_total", route="/v1/chat/completions")
            for _ in range(4)
        ]
    assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    assert totals == [sent] * 4, "whichever worker answers the scrape, the sum is every worker's"
