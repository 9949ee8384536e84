"""The in-flight count per upstream shared by replicas, on the limiter's concurrency leases (Redis).

Each replica asks for a lease under its own L; the lease script counts the leases every replica holds, so
together they keep the upstream at L. If Redis cannot be reached the buffer falls back to its local count:
the upstream is protected by each replica's own L rather than by nothing.
"""

from __future__ import annotations

import contextlib

from proxy.limits import Bucket, Grant, Limiter, LimiterUnavailable, RateLimits

UNSHARED = object()  # the lease of a request admitted while Redis was unreachable


class LeaseCount:
    """``SharedCount`` over a ``Limiter``'s concurrency buckets, one bucket per upstream."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def take(self, upstream: str, limit: int) -> object | None:
        scope = f"buffer:{upstream}"
        try:
            grant = await self.limiter.acquire([Bucket(scope, scope, RateLimits(concurrency=limit))], 0)
        except LimiterUnavailable:
            return UNSHARED
        return grant if grant.allowed else None

    async def give(self, lease: object) -> None:
        if isinstance(lease, Grant):
            # Unreachable Redis: the lease expires on its own (limits.lease_seconds).
            with contextlib.suppress(LimiterUnavailable):
                await self.limiter.settle(lease, 0, 0)
