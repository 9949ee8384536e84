"""The buffer through Fluido on real sockets, in front of the fixed-capacity fake: the upstream never holds
more than L, Fluido holds the queue, orders it by deadline, and sheds early with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import running
from tests.middleware.buffer.support import LONG, SHORT, ask, buffer_config, capacity, metric_is
from tests.support.wait import until

FIXED_2 = {"upstreams": {"fake": {"parallel": 2, "adaptive": False}}}
FIXED_1 = {"upstreams": {"fake": {"parallel": 1, "adaptive": False}}}


async def test_the_upstream_never_runs_more_than_L_and_queues_nothing_itself() -> None:
    with capacity(4, itl_s=0.01) as fake, running(buffer_config(fake, FIXED_2)) as url:
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(ask(session, url, tokens=5) for _ in range(12)))
    assert all(a.status == 200 and a.finish == "length" for a in answers)
    assert fake.max_in_flight == 2 and fake.max_waiting == 0


async def test_without_the_buffer_the_upstream_queues_the_excess() -> None:
    """Positive control for the test above: the same load, buffer off, reaches the fake's own queue."""
    with capacity(2, itl_s=0.01) as fake, running(buffer_config(fake, {"enabled": False})) as url:
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(ask(session, url, tokens=5) for _ in range(8)))
    assert all(a.status == 200 for a in answers)
    assert fake.max_waiting > 0


async def test_llama_cpp_slots_seed_the_limit() -> None:
    with capacity(3) as fake, running(buffer_config(fake)) as url:
        async with aiohttp.ClientSession() as session:
            await until(metric_is(session, url, 'fluido_buffer_limit{upstream="fake"}', 3.0))
            answers = await asyncio.gather(*(ask(session, url, tokens=8) for _ in range(9)))
    assert all(a.status == 200 for a in answers)
    assert fake.max_in_flight == 3 and fake.max_waiting == 0


async def test_a_request_that_waited_says_how_long() -> None:
    with capacity(1, itl_s=0.02) as fake, running(buffer_config(fake, FIXED_1)) as url:
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(ask(session, url, tokens=10))
            await until(lambda: fake.in_flight == 1)
            second = await ask(session, url, tokens=2)
            assert (await first).status == 200
    assert second.status == 200 and int(second.headers["x-fluido-queue-ms"]) > 0
    assert "x-fluido-queue-ms" not in (await first).headers


async def served_order(config: dict[str, Any]) -> list[str]:
    """One slot busy with a long request, three more long ones queued, then a short question: the order in
    which the upstream saw their prompts (every answer must be a 200)."""
    with capacity(1, itl_s=0.01) as fake, running(buffer_config(fake, config)) as url:
        async with aiohttp.ClientSession() as session:
            running_one = asyncio.create_task(ask(session, url, LONG, tokens=20))
            await until(lambda: fake.in_flight == 1)
            longs = [asyncio.create_task(ask(session, url, LONG, tokens=3)) for _ in range(3)]
            await until(metric_is(session, url, 'fluido_buffer_queue_depth{upstream="fake"}', 3.0))
            short = asyncio.create_task(ask(session, url, SHORT, tokens=3))
            await until(metric_is(session, url, 'fluido_buffer_queue_depth{upstream="fake"}', 4.0))
            answers = await asyncio.gather(running_one, *longs, short)
    assert all(a.status == 200 for a in answers)
    return [r["messages"][0]["content"] for r in fake.requests]


async def test_short_questions_pass_queued_long_ones() -> None:
    served = await served_order(FIXED_1)
    assert served == [LONG, SHORT, LONG, LONG, LONG]  # the short one went right after the running one


async def test_first_come_first_served_queues_by_arrival_with_one_common_budget() -> None:
    """The comparison baseline: a plain FIFO queue. The short question waits behind the long ones that came
    first, and is not shed for its class's budget (far shorter than that wait): FIFO knows no classes."""
    fifo = {**FIXED_1, "order": "fifo", "budgets": {"short": 0.05}, "default_budget": 30.0}
    served = await served_order(fifo)
    assert served == [LONG, LONG, LONG, LONG, SHORT]


async def test_a_full_queue_sheds_at_once_with_retry_after() -> None:
    with capacity(1, itl_s=0.02) as fake, running(buffer_config(fake, {**FIXED_1, "queue_bound": 1})) as url:
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(ask(session, url, tokens=20))
            await until(lambda: fake.in_flight == 1)
            queued = asyncio.create_task(ask(session, url, tokens=2))
            await until(metric_is(session, url, 'fluido_buffer_queue_depth{upstream="fake"}', 1.0))
            shed = await ask(session, url, tokens=2)
            answers = await asyncio.gather(first, queued)
    assert shed.status == 429 and shed.body["error"]["code"] == "queue_full"
    assert shed.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(shed.headers["retry-after"]) <= 60 and int(shed.headers["retry-after-ms"]) >= 1000
    assert shed.headers["x-fluido-shed"] == "queue_full"
    assert all(a.status == 200 for a in answers)  # positive control: the others were served
    assert fake.requests_seen == 2  # the shed one never reached the upstream


async def test_coalesced_streams_reach_the_sdk_whole() -> None:
    """A fast upstream (1 ms between tokens) is coalesced; the SDK still reads every word, in order."""
    from openai import AsyncOpenAI

    with capacity(4, itl_s=0.001) as fake, running(buffer_config(fake)) as url:
        client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        async def one() -> tuple[str, str | None]:
            stream = await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": SHORT}], max_tokens=200, stream=True
            )
            text, finish = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            return text, finish

        first = await one()  # measures the upstream's pace: the next streams are coalesced
        rest = await asyncio.gather(*(one() for _ in range(8)))
        await client.close()
    assert first[1] == "length" and len(first[0].split()) == 200
    assert all(r == first for r in rest)
