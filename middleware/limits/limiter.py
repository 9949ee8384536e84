"""Rate limiting state: token buckets for requests and tokens per minute, leases for concurrency.

The contract (``Bucket``, ``Grant``, the ``Limiter`` protocol) is the core's, in ``proxy.limits``.

Buckets refill continuously (capacity per minute, spread over the minute), so a full bucket lets a burst of
exactly its capacity through. A request that reserves more tokens than a whole minute's budget passes when
the bucket is full and leaves it in debt, rather than never passing at all.

``MemoryLimiter`` serves one process; ``redis_limiter.RedisLimiter`` does the same in one Lua script per
call, so the limits hold across any number of replicas.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from proxy.limits import WINDOW, Bucket, Grant, RateLimits, budget


class MemoryLimiter:
    """Exact limits for one process."""

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # bucket key -> (level, when)
        self._leases: dict[str, dict[str, float]] = {}  # bucket key -> lease -> expiry

    def _level(self, key: str, capacity: int, now: float) -> float:
        level, when = self._levels.get(key, (capacity, now))
        return min(capacity, level + (now - when) * capacity / WINDOW)

    def _holders(self, key: str, now: float) -> dict[str, float]:
        holders = self._leases.setdefault(key, {})
        for lease in [lease for lease, expiry in holders.items() if expiry <= now]:
            del holders[lease]
        return holders

    async def acquire(self, buckets: Sequence[Bucket], tokens: int) -> Grant:
        now = self.clock()
        retry, refused = 0.0, ""
        for b in buckets:
            rpm, tpm, concurrency = b.limits.rpm, b.limits.tpm, b.limits.concurrency
            if rpm and (level := self._level(b.name + ":r", rpm, now)) < 1:
                retry, refused = max(retry, (1 - level) * WINDOW / rpm), "rpm"
            need = min(tokens, tpm)
            if tpm and (level := self._level(b.name + ":t", tpm, now)) < need:
                retry, refused = max(retry, (need - level) * WINDOW / tpm), "tpm"
            if concurrency and len(self._holders(b.name + ":c", now)) >= concurrency:
                retry, refused = max(retry, 1.0), "concurrency"
        first = buckets[0].limits if buckets else RateLimits()
        if refused:
            requests = (
                budget(first.rpm, self._level(buckets[0].name + ":r", first.rpm, now)) if first.rpm else None
            )
            tokens_left = (
                budget(first.tpm, self._level(buckets[0].name + ":t", first.tpm, now)) if first.tpm else None
            )
            return Grant(False, retry_after=retry, refused_by=refused, requests=requests, tokens=tokens_left)
        lease = uuid.uuid4().hex
        for b in buckets:
            if b.limits.rpm:
                self._levels[b.name + ":r"] = (self._level(b.name + ":r", b.limits.rpm, now) - 1, now)
            if b.limits.tpm:
                self._levels[b.name + ":t"] = (self._level(b.name + ":t", b.limits.tpm, now) - tokens, now)
            if b.limits.concurrency:
                self._holders(b.name + ":c", now)[lease] = now + self.lease_seconds
        requests = budget(first.rpm, self._levels[buckets[0].name + ":r"][0]) if first.rpm else None
        tokens_left = budget(first.tpm, self._levels[buckets[0].name + ":t"][0]) if first.tpm else None
        return Grant(True, lease=lease, requests=requests, tokens=tokens_left, buckets=tuple(buckets))

    async def settle(self, grant: Grant, reserved: int, used: int) -> None:
        now = self.clock()
        for b in grant.buckets:
            if b.limits.tpm and reserved != used:
                key = b.name + ":t"
                self._levels[key] = (
                    min(b.limits.tpm, self._level(key, b.limits.tpm, now) + reserved - used),
                    now,
                )
            if b.limits.concurrency:
                self._holders(b.name + ":c", now).pop(grant.lease, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
