"""Hundreds of clients leaving mid-stream at once: every upstream request stops within a second, and no
concurrency slot, upstream lease, connection or task is left behind, with either limiter backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis as redis_client

from tests.soak.conftest import fluido_config
from tests.soak.load import Deadline, scale, session
from tests.support.processes import Fluido, PacedUpstream
from tests.support.procfs import tcp_connections
from tests.support.redis_server import RedisServer

CLIENTS = int(scale(100, 500))
KEY = "sk-storm-0123456789"
CANCEL_WITHIN_S = 1.0


def storm_config(upstream: PacedUpstream, backend: str, redis_url: str) -> dict[str, Any]:
    # Exactly CLIENTS slots for the key and for the upstream: one leaked slot shows as a 429 afterwards.
    return fluido_config(
        upstream.url,
        upstream={"concurrency": CLIENTS},
        keys={"storm": {"key_env": "STORM_KEY", "concurrency": CLIENTS, "admin": True}},
        limits={"backend": backend},
        redis={"url": redis_url},
    )


class Crowd:
    """Clients that open a stream each, hold it once its first token arrives, and leave together."""

    def __init__(self, server: Fluido, size: int, tag: str) -> None:
        self.server = server
        self.size = size
        self.tag = tag
        self.statuses: list[int] = []
        self.closed_at: dict[str, float] = {}
        self.holding = 0
        self.all_holding = asyncio.Event()
        self.leave = asyncio.Event()

    async def client(self, s: aiohttp.ClientSession, i: int) -> None:
        marker = f"{self.tag} {i}"
        body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": marker}]}
        headers = {"authorization": f"Bearer {KEY}"}
        async with s.post(f"{self.server.url}/v1/chat/completions", json=body, headers=headers) as resp:
            self.statuses.append(resp.status)
            if resp.status == 200:
                async for line in resp.content:
                    if b'"content":"tok' in line:
                        break
            self.holding += 1
            if self.holding == self.size:
                self.all_holding.set()
            await self.leave.wait()
            self.closed_at[marker] = time.monotonic()
            resp.close()  # drops the connection mid-stream, as a client that goes away does

    async def run(
        self, s: aiohttp.ClientSession, hold_check: Callable[[], Awaitable[Any]] | None = None
    ) -> Any:
        tasks = [asyncio.create_task(self.client(s, i)) for i in range(self.size)]
        try:
            async with asyncio.timeout(60):
                await self.all_holding.wait()
            checked = await hold_check() if hold_check is not None else None
        finally:
            self.leave.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        return checked


def redis_leases(url: str) -> int:
    r = redis_client.Redis.from_url(url)
    return sum(int(r.zcard(k)) for k in r.scan_iter("fluido:rl:*:c"))


async def refused_extra(server: Fluido) -> int:
    async with session() as s:
        body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "one too many"}]}
        headers = {"authorization": f"Bearer {KEY}"}
        async with s.post(f"{server.url}/v1/chat/completions", json=body, headers=headers) as resp:
            return resp.status


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_disconnect_storm_cancels_every_upstream_request_and_leaks_nothing(
    backend: str,
    paced: Callable[..., PacedUpstream],
    fluido: Callable[..., Fluido],
    redis_server: RedisServer,
) -> None:
    # 20 s streams at 5 tokens a second: the storm is always mid-stream, and hundreds of streams make
    # thousands of tokens a second through Fluido while it happens.
    upstream = paced(tokens=100, interval=0.2)
    server = fluido(storm_config(upstream, backend, redis_server.url), env={"STORM_KEY": KEY})
    tasks_before = server.runtime(KEY)["tasks"]

    storm = Crowd(server, CLIENTS, "storm")
    held: dict[str, int] = {}

    async def while_held() -> None:
        # Positive controls: with every slot taken one more client is refused, and Redis holds the leases.
        held["extra_status"] = await refused_extra(server)
        held["leases"] = redis_leases(redis_server.url) if backend == "redis" else 0

    async with session() as s:
        await storm.run(s, hold_check=while_held)
    assert storm.statuses == [200] * CLIENTS
    assert held["extra_status"] == 429

    cancels: dict[str, float] = {}

    def all_cancelled() -> bool:
        cancels.update((m, t) for m, t in upstream.stats()["cancels"] if m.startswith("storm "))
        return len(cancels) >= CLIENTS

    assert await Deadline(10).poll(all_cancelled, every=0.1), f"{len(cancels)} of {CLIENTS} cancelled"
    delays = sorted(cancels[m] - storm.closed_at[m] for m in storm.closed_at)
    print(
        f"\nDisconnect storm ({backend}): {CLIENTS} clients left mid-stream ({CLIENTS * 5} tokens/s flowing); "
        f"upstream cancelled "
        f"{len(cancels)}, delay p50 {delays[len(delays) // 2] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )
    assert delays[-1] <= CANCEL_WITHIN_S

    # Nothing left behind: no upstream connection, handler, task or (Redis) lease.
    assert await Deadline(10).poll(lambda: tcp_connections(server.pid, upstream.port) == 0)
    assert upstream.stats()["in_flight"] == 0
    assert await Deadline(10).poll(lambda: server.runtime(KEY)["tasks"] <= tasks_before)
    if backend == "redis":
        assert held["leases"] == 2 * CLIENTS  # the key's slot and the upstream's, per stream
        assert redis_leases(redis_server.url) == 0

    # Every slot is free again: a second crowd of the same size is admitted whole.
    again = Crowd(server, CLIENTS, "again")
    async with session() as s:
        await again.run(s)
    assert again.statuses == [200] * CLIENTS
