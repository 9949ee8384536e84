"""The upstream's own word, read in the background: llama.cpp's slots, vLLM's and llama.cpp's queues."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from middleware.buffer.signals import Signals, queued, root_of
from tests.fakes.capacity import FakeCapacity
from tests.support.wait import until


def test_queue_gauges_are_read_by_prefix_and_summed_over_label_sets() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="a"} 2.0\n'
        'vllm:num_requests_waiting{model_name="b"} 1.0\n'
        'vllm:num_requests_running{model_name="a"} 7.0\n'
    )
    assert queued(text) == 3
    assert queued("llamacpp:requests_deferred 4\n") == 4
    assert queued("process_cpu_seconds_total 1.0\n") is None


def test_root_is_the_base_url_without_v1() -> None:
    assert root_of("http://h:8000/v1") == "http://h:8000"
    assert root_of("http://h:8000") == "http://h:8000"


async def watch(fake: FakeCapacity, slots: list[int], waiting: list[int]) -> asyncio.Task[None]:
    signals = Signals(fake.url + "/v1", 0.02, slots.append, waiting.append)
    return asyncio.create_task(signals.run())


async def test_llama_cpp_reports_its_slots_and_its_deferred_requests() -> None:
    slots: list[int] = []
    waiting: list[int] = []
    async with FakeCapacity(1, mode="llamacpp", itl_s=0.05) as fake, aiohttp.ClientSession() as session:
        task = await watch(fake, slots, waiting)
        await until(lambda: slots == [1] and len(waiting) > 0)
        assert waiting[-1] == 0
        body = {"model": "capacity-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        posts = [
            asyncio.create_task(session.post(fake.url + "/v1/chat/completions", json=body)) for _ in range(3)
        ]
        await until(lambda: waiting[-1] == 2)
        for post in posts:
            (await post).release()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_vllm_reports_its_waiting_requests() -> None:
    slots: list[int] = []
    waiting: list[int] = []
    async with FakeCapacity(1, mode="vllm", itl_s=0.05) as fake, aiohttp.ClientSession() as session:
        task = await watch(fake, slots, waiting)
        body = {"model": "capacity-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        posts = [
            asyncio.create_task(session.post(fake.url + "/v1/chat/completions", json=body)) for _ in range(2)
        ]
        await until(lambda: bool(waiting) and waiting[-1] == 1)
        for post in posts:
            (await post).release()
        await until(lambda: waiting[-1] == 0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert slots == []  # vLLM has no /props: L starts from the configured default


async def test_a_server_without_metrics_is_not_asked_again() -> None:
    async with FakeCapacity(1, mode="ollama") as fake:  # no /metrics route at all
        signals = Signals(fake.url, 0.01, lambda n: None, lambda n: None)
        task = asyncio.create_task(signals.run())
        await until(lambda: not signals.has_metrics)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
