"""Rate limiting state: token buckets for requests and tokens per minute, leases for concurrency.

The contract (``Bucket``, ``Grant``, the ``Limiter`` protocol) is the core's, in ``proxy.limits``.

Buckets refill continuously (capacity per minute, spread over the minute), so a full bucket lets a burst of
exactly its capacity through. A request that reserves more tokens than a whole minute's budget passes when
the bucket is full and leaves it in debt, rather than never passing at all.

``MemoryLimiter`` serves one process; ``redis_limiter.RedisLimiter`` does the same in one Lua script per
call, so the limits hold across any number of replicas.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from proxy.limits import WINDOW, Bucket, Grant, RateLimits, budget


class MemoryLimiter:
    """Exact limits for one process."""

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # bucket key -> (level, when)
        self._leases: dict[str, dict[str, float]] = {}  # bucket key -> lease -> expiry
        # Leases only need to be unique within this process's limiter: a counter, not a random id.
        self._lease_ids = itertools.count(1)

    def _level(self, key: str, capacity: int, now: float) -> float:
        level, when = self._levels.get(key, (capacity, now))
        return min(capacity, level + (now - when) * capacity / WINDOW)

    def _holders(self, key: str, concurrency: int, now: float) -> dict[str, float]:
        holders = self._leases.setdefault(key, {})
        # Expired leases (of requests that never settled) only matter when they could make a refusal:
        # fewer holders than the limit, expired or not, are fewer live ones too. So they are swept then.
        if len(holders) >= concurrency:
            for lease in [lease for lease, expiry in holders.items() if expiry <= now]:
                del holders[lease]
        return holders

    async def acquire(self, buckets: Sequence[Bucket], tokens: int) -> Grant:
        now = self.clock()
        retry, refused = 0.0, ""
        # Each bucket's levels and holders, computed once and reused below if the request is allowed.
        states: list[tuple[float, float, dict[str, float] | None]] = []
        for b in buckets:
            rpm, tpm, concurrency = b.limits.rpm, b.limits.tpm, b.limits.concurrency
            requests_level = self._level(b.name + ":r", rpm, now) if rpm else 0.0
            tokens_level = self._level(b.name + ":t", tpm, now) if tpm else 0.0
            holders = self._holders(b.name + ":c", concurrency, now) if concurrency else None
            if rpm and requests_level < 1:
                retry, refused = max(retry, (1 - requests_level) * WINDOW / rpm), "rpm"
            need = min(tokens, tpm)
            if tpm and tokens_level < need:
                retry, refused = max(retry, (need - tokens_level) * WINDOW / tpm), "tpm"
            if holders is not None and len(holders) >= concurrency:
                retry, refused = max(retry, 1.0), "concurrency"
            states.append((requests_level, tokens_level, holders))
        first = buckets[0].limits if buckets else RateLimits()
        if refused:
            requests = (
                budget(first.rpm, self._level(buckets[0].name + ":r", first.rpm, now)) if first.rpm else None
            )
            tokens_left = (
                budget(first.tpm, self._level(buckets[0].name + ":t", first.tpm, now)) if first.tpm else None
            )
            return Grant(False, retry_after=retry, refused_by=refused, requests=requests, tokens=tokens_left)
        lease = f"{next(self._lease_ids):x}"
        for b, (requests_level, tokens_level, holders) in zip(buckets, states, strict=True):
            if b.limits.rpm:
                self._levels[b.name + ":r"] = (requests_level - 1, now)
            if b.limits.tpm:
                self._levels[b.name + ":t"] = (tokens_level - tokens, now)
            if holders is not None:
                holders[lease] = now + self.lease_seconds
        requests = budget(first.rpm, states[0][0] - 1) if first.rpm else None
        tokens_left = budget(first.tpm, states[0][1] - tokens) if first.tpm else None
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
                # Expired leases are swept by an acquire that finds the bucket at its limit, the only reader.
                self._leases.get(b.name + ":c", {}).pop(grant.lease, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
