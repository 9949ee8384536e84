"""Two Fluido replicas sharing Redis keep the upstream at L in total, not 2 x L."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import running
from tests.middleware.buffer.support import ask, buffer_config, capacity
from tests.support.redis_server import RedisServer

FIXED_2 = {"upstreams": {"fake": {"parallel": 2, "adaptive": False}}}


async def load_both(urls: list[str], each: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(ask(session, url, tokens=6) for url in urls for _ in range(each)))
    return [a.status for a in answers]


async def test_replicas_sharing_redis_keep_the_upstream_at_L_in_total(redis_server: RedisServer) -> None:
    with capacity(4, itl_s=0.02) as fake:
        sections = {"limits": {"backend": "redis"}, "redis": {"url": redis_server.url}}
        cfg = buffer_config(fake, FIXED_2, **sections)
        with running(cfg) as one, running(cfg) as two:
            statuses = await load_both([one, two], 8)
    assert statuses == [200] * 16
    assert fake.max_in_flight == 2 and fake.max_waiting == 0


async def test_replicas_with_memory_counts_each_send_L() -> None:
    """Positive control: without the shared count, two replicas put 2 x L on the upstream."""
    with capacity(4, itl_s=0.02) as fake:
        cfg = buffer_config(fake, FIXED_2)
        with running(cfg) as one, running(cfg) as two:
            statuses = await load_both([one, two], 8)
    assert statuses == [200] * 16
    assert fake.max_in_flight == 4
