"""Logging happens off the request path: a slow or stuck sink never stalls a request."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import structlog

from proxy.config import LogConfig, parse
from proxy.observe.logs import LogWriter, configure_logging
from tests.conftest import running, upstream_for
from tests.fakes.vllm import FakeVLLM


class StuckSink(io.RawIOBase):
    """A sink whose writes block until released, like a stdout nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.lines: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.release.wait()
        self.lines.append(bytes(data))
        return len(data)


@pytest.fixture
def stuck() -> Iterator[StuckSink]:
    sink = StuckSink()
    yield sink
    sink.release.set()


def test_records_are_json_lines_written_by_the_background_thread() -> None:
    sink = io.BytesIO()
    writer = configure_logging(LogConfig(), sink)
    writer.start()
    structlog.get_logger("test").info("hello", answer=42)
    writer.close()
    (line,) = sink.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["event"] == "hello" and record["answer"] == 42 and record["level"] == "info"
    assert "timestamp" in record


def test_the_console_format_writes_readable_lines() -> None:
    sink = io.BytesIO()
    writer = configure_logging(LogConfig(format="console"), sink)
    writer.start()
    structlog.get_logger("test").warning("disk nearly full", free_mb=12)
    writer.close()
    line = sink.getvalue().decode()
    assert "disk nearly full" in line and "free_mb=12" in line and not line.startswith("{")


def test_records_below_the_level_are_not_written() -> None:
    sink = io.BytesIO()
    writer = configure_logging(LogConfig(level="warning"), sink)
    writer.start()
    structlog.get_logger("test").info("chatter")
    writer.close()
    assert sink.getvalue() == b""


def test_a_full_queue_drops_and_counts_instead_of_blocking(stuck: StuckSink) -> None:
    writer = LogWriter(stuck, capacity=2)  # type: ignore[arg-type]
    writer.start()
    started = time.monotonic()
    for i in range(50):
        writer.write(b"line %d" % i)
    assert time.monotonic() - started < 0.5
    assert writer.dropped >= 47  # one line may be in the thread's hands, two in the queue


def test_a_blocked_log_sink_does_not_stall_requests(vllm: FakeVLLM, stuck: StuckSink) -> None:
    cfg = parse(
        {
            "log": {"queue_size": 4},
            "upstreams": {"up0": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": "Qwen/Qwen2.5-0.5B-Instruct"}]}},
        }
    )
    with running(cfg, log_sink=stuck) as url, httpx.Client(base_url=url, timeout=5) as client:  # type: ignore[arg-type]
        started = time.monotonic()
        for _ in range(20):
            r = client.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200
        elapsed = time.monotonic() - started
        metrics = client.get("/metrics").text
        stuck.release.set()
    assert elapsed < 5, "requests finished while the writer was stuck"
    dropped = next(
        line for line in metrics.splitlines() if line.startswith("fluido_log_records_dropped_total")
    )
    assert float(dropped.split()[-1]) >= 15
