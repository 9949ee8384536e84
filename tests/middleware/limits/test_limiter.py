"""One contract for both limiter backends: in memory, and Redis through its Lua script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from middleware.limits.config import RedisConfig
from middleware.limits.limiter import MemoryLimiter
from middleware.limits.redis_limiter import RedisLimiter
from proxy.limits import Bucket, Limiter, LimiterUnavailable, RateLimits
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter(lease_seconds=60)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    backend = RedisLimiter(RedisConfig(url=server.url), lease_seconds=60)
    yield backend
    await backend.close()


def bucket(name: str = "key:a", **limits: int) -> Bucket:
    return Bucket(scope=name, name=name, limits=RateLimits(**limits))


async def test_exactly_rpm_requests_pass_in_a_burst(limiter: Limiter) -> None:
    b = bucket(rpm=5)
    grants = [await limiter.acquire([b], 0) for _ in range(8)]
    assert [g.allowed for g in grants] == [True] * 5 + [False] * 3
    refused = grants[-1]
    assert refused.refused_by == "rpm" and 0 < refused.retry_after <= 12.5
    assert (
        grants[4].requests is not None and grants[4].requests.remaining == 0 and grants[4].requests.limit == 5
    )


async def test_tokens_are_reserved_and_a_too_big_reservation_waits(limiter: Limiter) -> None:
    b = bucket(tpm=1000)
    first = await limiter.acquire([b], 600)
    assert first.allowed and first.tokens is not None and first.tokens.remaining == 400
    second = await limiter.acquire([b], 600)
    assert not second.allowed and second.refused_by == "tpm"


async def test_settling_gives_back_unused_tokens(limiter: Limiter) -> None:
    b = bucket(tpm=1000)
    grant = await limiter.acquire([b], 900)
    await limiter.settle(grant, reserved=900, used=100)
    assert (await limiter.acquire([b], 800)).allowed


async def test_settling_charges_tokens_used_beyond_the_reservation(limiter: Limiter) -> None:
    b = bucket(tpm=1000)
    grant = await limiter.acquire([b], 100)
    await limiter.settle(grant, reserved=100, used=700)
    assert not (await limiter.acquire([b], 400)).allowed


async def test_concurrency_slots_are_held_until_settled(limiter: Limiter) -> None:
    b = bucket(concurrency=2)
    one, two = await limiter.acquire([b], 0), await limiter.acquire([b], 0)
    third = await limiter.acquire([b], 0)
    assert one.allowed and two.allowed and not third.allowed and third.refused_by == "concurrency"
    await limiter.settle(one, 0, 0)
    assert (await limiter.acquire([b], 0)).allowed


async def test_a_request_is_counted_in_all_of_its_buckets_or_none(limiter: Limiter) -> None:
    key, model = bucket("key:a", rpm=10), Bucket("key:a", "key:a:model:m", RateLimits(rpm=2))
    assert (await limiter.acquire([key, model], 0)).allowed
    assert (await limiter.acquire([key, model], 0)).allowed
    assert not (await limiter.acquire([key, model], 0)).allowed, "the model bucket is empty"
    grant = await limiter.acquire([key], 0)
    assert grant.allowed and grant.requests is not None and grant.requests.remaining == 7, (
        "refusal consumed nothing"
    )


async def test_buckets_of_different_clients_are_independent(limiter: Limiter) -> None:
    assert (await limiter.acquire([bucket("key:a", rpm=1)], 0)).allowed
    assert (await limiter.acquire([bucket("key:b", rpm=1)], 0)).allowed
    assert not (await limiter.acquire([bucket("key:a", rpm=1)], 0)).allowed


def test_the_memory_bucket_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = MemoryLimiter(lease_seconds=60, clock=lambda: now[0])
    b = bucket(rpm=60)

    async def burst() -> int:
        return sum([(await limiter.acquire([b], 0)).allowed for _ in range(100)])

    import asyncio

    assert asyncio.run(burst()) == 60
    now[0] = 10.0
    assert asyncio.run(burst()) == 10, "one request a second comes back"


def test_an_expired_lease_frees_its_slot() -> None:
    import asyncio

    now = [0.0]
    limiter = MemoryLimiter(lease_seconds=5, clock=lambda: now[0])
    b = bucket(concurrency=1)
    assert asyncio.run(limiter.acquire([b], 0)).allowed
    assert not asyncio.run(limiter.acquire([b], 0)).allowed
    now[0] = 5.0
    assert asyncio.run(limiter.acquire([b], 0)).allowed, "a crashed holder does not keep the slot forever"


def test_expired_leases_count_for_nothing_at_any_concurrency() -> None:
    import asyncio

    now = [0.0]
    limiter = MemoryLimiter(lease_seconds=5, clock=lambda: now[0])
    b = bucket(concurrency=3)
    for _ in range(2):  # two holders that crash: never settled
        assert asyncio.run(limiter.acquire([b], 0)).allowed
    now[0] = 5.0
    live = [asyncio.run(limiter.acquire([b], 0)) for _ in range(3)]
    assert all(g.allowed for g in live), "the crashed holders' slots are free again"
    assert not asyncio.run(limiter.acquire([b], 0)).allowed, "three live holders fill it"
    asyncio.run(limiter.settle(live[0], 0, 0))
    assert asyncio.run(limiter.acquire([b], 0)).allowed


async def test_an_unreachable_redis_is_limiter_unavailable() -> None:
    backend = RedisLimiter(RedisConfig(url="redis://127.0.0.1:1/0", timeout=0.2), lease_seconds=60)
    with pytest.raises(LimiterUnavailable):
        await backend.acquire([bucket(rpm=1)], 0)
    with pytest.raises(LimiterUnavailable):
        await backend.ping()
    await backend.close()


async def test_a_burst_larger_than_the_connection_pool_is_limited_exactly(limiter: Limiter) -> None:
    """Hundreds of checks at once queue for a connection; none is mistaken for an unreachable Redis."""
    burst = 300
    grants = await asyncio.gather(*(limiter.acquire([bucket(concurrency=burst)], 0) for _ in range(burst)))
    assert all(g.allowed for g in grants)
    refused = await limiter.acquire([bucket(concurrency=burst)], 0)
    assert not refused.allowed and refused.refused_by == "concurrency"
    await asyncio.gather(*(limiter.settle(g, 0, 0) for g in grants))
    assert (await limiter.acquire([bucket(concurrency=burst)], 0)).allowed


async def test_a_dead_redis_still_fails_fast_under_a_burst() -> None:
    """The wait for a free connection is bounded too: a burst against a dead Redis does not hang."""
    backend = RedisLimiter(RedisConfig(url="redis://127.0.0.1:1/0", timeout=0.2), lease_seconds=60)
    start = time.monotonic()
    results = await asyncio.gather(
        *(backend.acquire([bucket(rpm=1)], 0) for _ in range(200)), return_exceptions=True
    )
    assert all(isinstance(r, LimiterUnavailable) for r in results)
    assert time.monotonic() - start < 5
    await backend.close()
