"""One access record per request, however it ends; request ids in every line; Server-Timing."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.config import Config, parse
from tests.conftest import VLLM_MODEL, free_port, running, upstream_for
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

HI = [{"role": "user", "content": "Tell me a secret"}]


def records(sink: io.BytesIO, event: str = "request") -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    return [r for r in lines if r["event"] == event]


def wait_records(sink: io.BytesIO, n: int, event: str = "request") -> list[dict[str, Any]]:
    deadline = time.monotonic() + 3
    while len(found := records(sink, event)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def cfg_for(vllm: FakeVLLM, **log: Any) -> Config:
    return parse(
        {
            "log": log,
            "upstreams": {"up0": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        }
    )


@pytest.fixture
def sink() -> io.BytesIO:
    return io.BytesIO()


@pytest.fixture
def client(vllm: FakeVLLM, sink: io.BytesIO) -> Iterator[httpx.Client]:
    with running(cfg_for(vllm), log_sink=sink) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_one_access_record_per_request_with_its_facts(
    client: httpx.Client, sink: io.BytesIO, vllm: FakeVLLM, stream: bool
) -> None:
    body: dict[str, Any] = {"model": "chat", "messages": HI, "stream": stream}
    r = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "req-42"})
    r.read()
    (record,) = wait_records(sink, 1)
    assert record["request_id"] == "req-42" and record["client"] == "127.0.0.1"
    assert (record["route"], record["model"], record["stream"], record["status"]) == (
        "/v1/chat/completions", "chat", stream, 200,
    )  # fmt: skip
    assert (record["upstream"], record["upstream_model"]) == ("up0", VLLM_MODEL)
    assert record["completion_tokens"] == len(vllm.reply.split()) and record["prompt_tokens"] > 0
    assert 0 < record["ttfb_ms"] <= record["duration_ms"]
    assert "prompt" not in record and "completion" not in record, "no content unless asked for"


def test_an_error_record_names_its_type_and_code(client: httpx.Client, sink: io.BytesIO) -> None:
    client.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
    (record,) = wait_records(sink, 1)
    assert (record["status"], record["error_type"], record["error_code"]) == (
        404, "invalid_request_error", "model_not_found",
    )  # fmt: skip


def test_a_stream_ended_by_client_disconnect_still_has_one_record(
    client: httpx.Client, sink: io.BytesIO, vllm: FakeVLLM
) -> None:
    vllm.reply = " ".join(["word"] * 40)
    vllm.delay_between = 0.2
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True}
    ) as r:
        next(r.iter_lines())
    (record,) = wait_records(sink, 1)
    assert record["status"] == 200 and record["client_gone"] == "1" and record["stream"] is True
    # Once the upstream has seen the disconnect the stream is over everywhere; a later request's record
    # then comes after any record the abandoned stream could still have written.
    wait_until(lambda: vllm.disconnects == 1, "the upstream to see the client leave")
    client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    first, second = wait_records(sink, 2)
    assert first == record and second["stream"] is False
    assert len(records(sink)) == 2


def test_a_client_gone_before_the_answer_is_logged_as_499(
    client: httpx.Client, sink: io.BytesIO, vllm: FakeVLLM
) -> None:
    vllm.delay_first = 3
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"model": "chat", "messages": HI}, timeout=0.3)
    (record,) = wait_records(sink, 1)
    assert record["status"] == 499 and record["client_gone"] == "1"


def test_content_is_logged_truncated_only_when_enabled(vllm: FakeVLLM, sink: io.BytesIO) -> None:
    cfg = cfg_for(vllm, include_content=True, content_max_chars=12)
    with running(cfg, log_sink=sink) as url:
        httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI})
    (record,) = wait_records(sink, 1)
    assert record["prompt"] == "user: Tell m…"
    assert record["completion"] == vllm.reply[:12] + "…"


def test_the_request_id_is_bound_into_every_log_line_of_the_request(vllm: FakeVLLM, sink: io.BytesIO) -> None:
    cfg = parse(
        {
            "upstreams": {
                "dead": {"kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
                "up0": upstream_for(vllm),
            },
            "models": {
                "chat": {
                    "targets": [{"upstream": "dead", "model": "m"}, {"upstream": "up0", "model": VLLM_MODEL}]
                }
            },
        }
    )
    with running(cfg, log_sink=sink) as url:
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": HI},
            headers={"x-request-id": "trace-me"},
        )
    (failure,) = wait_records(sink, 1, event="upstream_failed")
    assert failure["request_id"] == "trace-me" and failure["upstream"] == "dead"


def test_server_timing_shows_the_proxy_and_the_upstream(client: httpx.Client, vllm: FakeVLLM) -> None:
    vllm.delay_first = 0.2
    r = client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert float(parts["upstream"]) >= 200 and float(parts["proxy"]) < float(parts["upstream"])


def test_probes_and_scrapes_are_not_logged(client: httpx.Client, sink: io.BytesIO) -> None:
    for path in ("/health", "/ready", "/metrics"):
        client.get(path)
    client.get("/v1/models")
    assert [r["route"] for r in wait_records(sink, 1)] == ["/v1/models"]
