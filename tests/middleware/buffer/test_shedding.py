"""Shedding and slot release through Fluido on real sockets: early 429s, expiry 503s, clients that leave,
streams that break, upstreams that are down or busy."""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.config import parse
from tests.conftest import free_port, running
from tests.middleware.buffer.support import (
    ask,
    buffer_config,
    capacity,
    metric,
    metric_is,
)
from tests.support.wait import until

FIXED_1 = {"upstreams": {"fake": {"parallel": 1, "adaptive": False}}}
DEPTH = 'fluido_buffer_queue_depth{upstream="fake"}'
IN_FLIGHT = 'fluido_buffer_in_flight{upstream="fake"}'


async def test_a_request_that_cannot_start_within_its_budget_is_shed_at_once() -> None:
    buffer = {**FIXED_1, "budgets": {"short": 1.3}}
    with capacity(1, itl_s=0.02) as fake, running(buffer_config(fake, buffer)) as url:
        async with aiohttp.ClientSession() as session:
            assert (await ask(session, url, tokens=20)).status == 200  # measures ~0.4 s per request
            first = asyncio.create_task(ask(session, url, tokens=20))
            await until(lambda: fake.in_flight == 1)
            waiting = [asyncio.create_task(ask(session, url, tokens=20)) for _ in range(2)]
            await until(metric_is(session, url, DEPTH, 2.0))
            # 3 x 0.4 s ahead of it: past its 1.3 s budget less its margin (a fifth of it)
            shed = await ask(session, url, tokens=20)
            answers = await asyncio.gather(first, *waiting)
    assert shed.status == 429 and shed.body["error"]["code"] == "deadline_unreachable"
    assert 1 <= int(shed.headers["retry-after"]) <= 60
    assert all(a.status == 200 for a in answers)
    assert fake.requests_seen == 4


async def test_a_request_still_waiting_at_its_deadline_expires_with_503_before_any_upstream_work() -> None:
    buffer = {**FIXED_1, "budgets": {"short": 0.3}}
    with capacity(1, itl_s=0.05) as fake, running(buffer_config(fake, buffer)) as url:
        async with aiohttp.ClientSession() as session:
            # The first request of all: no drain rate is known yet, so nothing is shed on arrival.
            first = asyncio.create_task(ask(session, url, tokens=20))
            await until(lambda: fake.in_flight == 1)
            expired = await ask(session, url, tokens=2)
            assert (await first).status == 200
            assert (
                await metric(session, url, 'fluido_buffer_shed_total{reason="expired",upstream="fake"}') == 1
            )
    assert expired.status == 503 and expired.body["error"]["code"] == "expired"
    assert 1 <= int(expired.headers["retry-after"]) <= 60
    assert fake.requests_seen == 1


async def test_a_waiting_client_that_leaves_is_removed_from_the_queue() -> None:
    with capacity(1, itl_s=0.05) as fake, running(buffer_config(fake, FIXED_1)) as url:
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(ask(session, url, tokens=20))
            await until(lambda: fake.in_flight == 1)
            leaving = asyncio.create_task(ask(session, url, tokens=2))
            await until(metric_is(session, url, DEPTH, 1.0))
            leaving.cancel()
            await until(metric_is(session, url, DEPTH, 0.0))
            assert (await first).status == 200
            after = await ask(session, url, tokens=2)  # positive control: the slot is free again
    assert after.status == 200
    assert fake.requests_seen == 2  # the one that left never reached the upstream


async def test_the_slot_is_given_back_when_a_stream_breaks_or_its_client_leaves() -> None:
    with capacity(1, itl_s=0.05) as fake, running(buffer_config(fake, FIXED_1)) as url:
        async with aiohttp.ClientSession() as session:
            fake.error_after = 2
            broken = await ask(session, url, tokens=10)
            fake.error_after = None
            assert broken.finish is None and any("error" in e for e in broken.events)
            leaving = asyncio.create_task(ask(session, url, tokens=40))
            await until(lambda: fake.in_flight == 1)
            leaving.cancel()
            await until(metric_is(session, url, IN_FLIGHT, 0.0))
            plain = await ask(session, url, tokens=3, stream=False)
            last = await ask(session, url, tokens=3)
            assert await metric(session, url, IN_FLIGHT) == 0.0
    assert plain.status == 200 and last.status == 200 and last.finish == "length"


async def test_every_target_down_is_answered_503_with_retry_after() -> None:
    cfg = parse(
        {
            "upstreams": {"gone": {"kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1",
                                   "breaker_failures": 1, "breaker_cooldown": 30}},
            "models": {"chat": {"targets": [{"upstream": "gone", "model": "m"}]}},
            "cache": {"enabled": False},
        }
    )  # fmt: skip
    with running(cfg) as url:
        async with aiohttp.ClientSession() as session:
            failed = await ask(session, url)  # opens the circuit
            down = await ask(session, url)
    assert failed.status in (502, 503) and "retry-after" not in failed.headers
    assert down.status == 503 and down.body["error"]["code"] == "upstream_unavailable"
    assert int(down.headers["retry-after"]) == 30


async def test_upstream_busy_answers_cut_the_limit() -> None:
    """Ollama says 503 "server busy" past its queue: Fluido had sent too many at once, so L drops."""
    buffer = {"upstreams": {"fake": {"parallel": 6}}}
    with (
        capacity(1, mode="ollama", itl_s=0.02, max_queue=0) as fake,
        running(buffer_config(fake, buffer)) as url,
    ):
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(ask(session, url, tokens=5) for _ in range(6)))
            limit = await metric(session, url, 'fluido_buffer_limit{upstream="fake"}')
    assert fake.rejected > 0 and any(a.status == 503 for a in answers)
    assert limit is not None and limit < 6
