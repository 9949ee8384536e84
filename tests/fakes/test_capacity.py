"""The fixed-capacity fake keeps its promises: timings, slots, queue bound, introspection, own process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import free_port
from tests.fakes.capacity import FakeCapacity
from tests.fakes.ollama import QUEUE_FULL
from tests.support.wait import until


def chat(words: int = 10, tokens: int = 5, stream: bool = True, **extra: Any) -> dict[str, Any]:
    body = {"model": "capacity-model", "messages": [{"role": "user", "content": " ".join(["w"] * words)}]}
    return body | {"max_tokens": tokens, "stream": stream} | extra


async def timed_stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Status, arrival time of each content event (perf_counter, from the send) and the parsed events."""
    t0 = time.perf_counter()
    async with session.post(url, json=body) as resp:
        events: list[Any] = []
        token_times: list[float] = []
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = orjson.loads(line[6:])
            events.append(event)
            if any(c["delta"].get("content") for c in event.get("choices", [])):
                token_times.append(time.perf_counter() - t0)
        return {"status": resp.status, "times": token_times, "events": events}


async def test_first_token_follows_prefill_and_tokens_follow_the_inter_token_latency() -> None:
    async with (
        FakeCapacity(1, prefill_base_s=0.04, prefill_per_token_s=0.002, itl_s=0.02) as fake,
        aiohttp.ClientSession() as session,
    ):
        body = chat(words=20, tokens=6, stream_options={"include_usage": True})
        got = await timed_stream(session, fake.url + "/v1/chat/completions", body)
    assert got["status"] == 200 and len(got["times"]) == 6
    assert 0.08 <= got["times"][0] < 0.08 + 0.04  # 40 ms + 20 words x 2 ms
    gaps = [b - a for a, b in zip(got["times"], got["times"][1:], strict=False)]
    assert 0.015 < sum(gaps) / len(gaps) < 0.028
    assert got["events"][-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
    assert got["events"][-2]["choices"][0]["finish_reason"] == "length"


async def test_requests_beyond_the_slots_wait_for_a_free_one() -> None:
    async with (
        FakeCapacity(2, prefill_base_s=0.05, prefill_per_token_s=0.0, itl_s=0.01) as fake,
        aiohttp.ClientSession() as session,
    ):
        url = fake.url + "/v1/chat/completions"
        results = await asyncio.gather(*(timed_stream(session, url, chat(tokens=6)) for _ in range(4)))
    firsts = sorted(r["times"][0] for r in results)
    assert fake.max_in_flight == 2 and fake.max_waiting == 2 and fake.completed == 4
    # The last two start when the first two end (50 ms prefill + 5 x 10 ms), so their first token is late.
    assert firsts[1] < 0.09 and firsts[2] >= 0.1 + 0.05 - 0.01
    assert fake.busy_seconds() == pytest.approx(4 * 0.1, abs=0.08)


async def test_slots_can_change_while_it_runs_and_metrics_show_the_queue() -> None:
    async with (
        FakeCapacity(1, prefill_base_s=0.0, itl_s=0.05, output_tokens=40) as fake,
        aiohttp.ClientSession() as session,
    ):
        url = fake.url + "/v1/chat/completions"
        tasks = [asyncio.create_task(timed_stream(session, url, chat(tokens=40))) for _ in range(3)]
        await until(lambda: fake.waiting == 2)

        async def gauges() -> str:
            async with session.get(fake.url + "/metrics") as resp:
                return await resp.text()

        metrics = await gauges()
        assert 'vllm:num_requests_running{engine="0",model_name="capacity-model"} 1.0' in metrics
        assert 'vllm:num_requests_waiting{engine="0",model_name="capacity-model"} 2.0' in metrics
        fake.slots = 3
        await until(lambda: fake.in_flight == 3 and fake.waiting == 0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert fake.max_in_flight == 3


async def test_a_client_that_leaves_the_queue_is_removed_from_it() -> None:
    async with FakeCapacity(1, prefill_base_s=0.0, itl_s=0.05) as fake, aiohttp.ClientSession() as session:
        url = fake.url + "/v1/chat/completions"
        running = asyncio.create_task(timed_stream(session, url, chat(tokens=60)))
        await until(lambda: fake.in_flight == 1)
        queued = asyncio.create_task(timed_stream(session, url, chat(tokens=60)))
        await until(lambda: fake.waiting == 1)
        queued.cancel()
        await until(lambda: fake.waiting == 0)
        assert fake.in_flight == 1  # positive control: the running one is untouched
        running.cancel()
        await asyncio.gather(running, queued, return_exceptions=True)
        await until(lambda: fake.in_flight == 0)


async def test_ollama_mode_answers_server_busy_past_its_queue_bound() -> None:
    async with (
        FakeCapacity(1, mode="ollama", prefill_base_s=0.0, itl_s=0.02, max_queue=1) as fake,
        aiohttp.ClientSession() as session,
    ):
        body = {"model": "capacity-model", "messages": [{"role": "user", "content": "hi"}],
                    "options": {"num_predict": 8}}  # fmt: skip

        async def call() -> tuple[int, list[Any]]:
            async with session.post(fake.url + "/api/chat", json=body) as resp:
                return resp.status, [orjson.loads(line) async for line in resp.content if line.strip()]

        first = asyncio.create_task(call())
        await until(lambda: fake.in_flight == 1)
        second = asyncio.create_task(call())
        await until(lambda: fake.waiting == 1)
        status, lines = await call()
        assert (status, lines) == (503, [{"error": QUEUE_FULL}])
        for status, lines in await asyncio.gather(first, second):
            assert status == 200 and lines[-1]["done"] is True and lines[-1]["eval_count"] == 8
            assert "".join(line["message"]["content"] for line in lines).count(" ") == 7
        async with session.get(fake.url + "/api/tags") as tags, session.get(fake.url + "/metrics") as m:
            assert (await tags.json())["models"][0]["name"] == "capacity-model"
            assert m.status == 404  # Ollama has no /metrics
    assert fake.rejected == 1 and fake.completed == 2


async def test_llamacpp_mode_reports_its_slots() -> None:
    async with (
        FakeCapacity(2, mode="llamacpp", prefill_base_s=0.0, itl_s=0.05) as fake,
        aiohttp.ClientSession() as session,
    ):

        async def get(path: str) -> tuple[int, Any]:
            async with session.get(fake.url + path) as resp:
                return resp.status, await resp.json(content_type=None)

        assert (await get("/props"))[1]["total_slots"] == 2
        assert (await get("/slots?fail_on_no_slot=1"))[0] == 200
        url = fake.url + "/v1/chat/completions"
        tasks = [asyncio.create_task(timed_stream(session, url, chat(tokens=40))) for _ in range(3)]
        await until(lambda: fake.in_flight == 2 and fake.waiting == 1)
        status, slots = await get("/slots")
        assert [s["is_processing"] for s in slots] == [True, True]
        status, body = await get("/slots?fail_on_no_slot=1")
        assert status == 503 and body["error"]["type"] == "unavailable_error"
        async with session.get(fake.url + "/metrics") as resp:
            text = await resp.text()
        assert "llamacpp:requests_processing 2" in text and "llamacpp:requests_deferred 1" in text
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_non_streamed_answer_comes_after_the_whole_generation() -> None:
    async with (
        FakeCapacity(1, prefill_base_s=0.03, prefill_per_token_s=0.0, itl_s=0.01) as fake,
        aiohttp.ClientSession() as session,
    ):
        t0 = time.perf_counter()
        async with session.post(fake.url + "/v1/chat/completions", json=chat(tokens=5, stream=False)) as resp:
            body = await resp.json()
        elapsed = time.perf_counter() - t0
    assert (
        body["usage"]["completion_tokens"] == 5 and body["choices"][0]["message"]["content"].count(" ") == 4
    )
    assert 0.07 <= elapsed < 0.15


def test_runs_as_its_own_process_and_takes_settings_over_http() -> None:
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.capacity", "--slots", "2", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()

        async def exercise() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{port}"
                async with session.post(base + "/_fake/config", json={"slots": 3, "itl_s": 0.001}) as resp:
                    assert resp.status == 200
                async with session.post(base + "/_fake/config", json={"nonsense": 1}) as resp:
                    assert resp.status == 400
                got = await timed_stream(session, base + "/v1/chat/completions", chat(tokens=3))
                assert got["status"] == 200 and len(got["times"]) == 3
                async with session.get(base + "/_fake/stats") as resp:
                    return dict(await resp.json())

        stats = asyncio.run(exercise())
        assert stats["slots"] == 3 and stats["completed"] == 1 and stats["requests_seen"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


async def test_the_load_factor_slows_tokens_as_slots_fill() -> None:
    async with FakeCapacity(2, prefill_base_s=0.0, itl_s=0.01) as fake, aiohttp.ClientSession() as session:
        url = fake.url + "/v1/chat/completions"
        alone = await timed_stream(session, url, chat(tokens=11))
        fake.load_factor = 3.0  # both slots busy: every token takes 3 x ITL
        both = await asyncio.gather(*(timed_stream(session, url, chat(tokens=11)) for _ in range(2)))
    assert alone["times"][-1] - alone["times"][0] == pytest.approx(0.1, abs=0.03)
    for got in both:
        assert got["times"][-1] - got["times"][0] == pytest.approx(0.3, abs=0.08)
    assert fake.utilization() > 0
