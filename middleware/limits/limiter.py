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
import math
import time
from collections.abc import Callable, Sequence

from proxy.limits import WINDOW, Bucket, Grant, RateLimits, budget


def _refilled(level: float, when: float, capacity: int, now: float) -> float:
    return min(capacity, level + (now - when) * capacity / WINDOW)


class _State:
    """One bucket's levels (requests, tokens), each with when it was last taken from, and its leases."""

    __slots__ = ("holders", "requests", "requests_at", "tokens", "tokens_at")

    def __init__(self) -> None:
        # Never taken from: a level taken at the beginning of time has refilled to the capacity, whatever
        # the capacity (the refill is capped there), as an untouched bucket should read.
        self.requests = self.tokens = 0.0
        self.requests_at = self.tokens_at = -math.inf
        self.holders: dict[str, float] = {}  # lease -> expiry


class MemoryLimiter:
    """Exact limits for one process.

    Nothing here waits, so ``take`` and ``give_back`` are plain functions, which the rate-limit link calls
    directly; ``acquire`` and ``settle`` are the same under the ``Limiter`` protocol's coroutines.
    """

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._states: dict[str, _State] = {}  # bucket name -> its state
        # Leases only need to be unique within this process's limiter: a counter, not a random id.
        self._lease_ids = itertools.count(1)

    def _state(self, name: str) -> _State:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _State()
        return state

    def take(self, buckets: Sequence[Bucket], tokens: int) -> Grant:
        """``acquire``, at once."""
        now = self.clock()
        retry, refused = 0.0, ""
        # Each bucket's state and levels, computed once and reused below if the request is allowed.
        states: list[tuple[_State, float, float]] = []
        for b in buckets:
            state, limits = self._state(b.name), b.limits
            rpm, tpm, concurrency = limits.rpm, limits.tpm, limits.concurrency
            requests_level = _refilled(state.requests, state.requests_at, rpm, now) if rpm else 0.0
            tokens_level = _refilled(state.tokens, state.tokens_at, tpm, now) if tpm else 0.0
            if rpm and requests_level < 1:
                retry, refused = max(retry, (1 - requests_level) * WINDOW / rpm), "rpm"
            need = min(tokens, tpm)
            if tpm and tokens_level < need:
                retry, refused = max(retry, (need - tokens_level) * WINDOW / tpm), "tpm"
            if concurrency and len(self._live_holders(state, concurrency, now)) >= concurrency:
                retry, refused = max(retry, 1.0), "concurrency"
            states.append((state, requests_level, tokens_level))
        first = buckets[0].limits if buckets else RateLimits()
        if refused:
            requests = budget(first.rpm, states[0][1]) if first.rpm else None
            tokens_left = budget(first.tpm, states[0][2]) if first.tpm else None
            return Grant(False, retry_after=retry, refused_by=refused, requests=requests, tokens=tokens_left)
        lease = f"{next(self._lease_ids):x}"
        for b, (state, requests_level, tokens_level) in zip(buckets, states, strict=True):
            limits = b.limits
            if limits.rpm:
                state.requests, state.requests_at = requests_level - 1, now
            if limits.tpm:
                state.tokens, state.tokens_at = tokens_level - tokens, now
            if limits.concurrency:
                state.holders[lease] = now + self.lease_seconds
        requests = budget(first.rpm, states[0][1] - 1) if first.rpm else None
        tokens_left = budget(first.tpm, states[0][2] - tokens) if first.tpm else None
        return Grant(True, lease=lease, requests=requests, tokens=tokens_left, buckets=tuple(buckets))

    @staticmethod
    def _live_holders(state: _State, concurrency: int, now: float) -> dict[str, float]:
        holders = state.holders
        # Expired leases (of requests that never settled) only matter when they could make a refusal:
        # fewer holders than the limit, expired or not, are fewer live ones too. So they are swept then.
        if len(holders) >= concurrency:
            for lease in [lease for lease, expiry in holders.items() if expiry <= now]:
                del holders[lease]
        return holders

    def give_back(self, grant: Grant, reserved: int, used: int) -> None:
        """``settle``, at once."""
        now = self.clock()
        for b in grant.buckets:
            tpm = b.limits.tpm
            if tpm and reserved != used:
                state = self._state(b.name)
                state.tokens = min(tpm, _refilled(state.tokens, state.tokens_at, tpm, now) + reserved - used)
                state.tokens_at = now
            if b.limits.concurrency and (held := self._states.get(b.name)) is not None:
                # Expired leases are swept by a take that finds the bucket at its limit, the only reader.
                held.holders.pop(grant.lease, None)

    async def acquire(self, buckets: Sequence[Bucket], tokens: int) -> Grant:
        return self.take(buckets, tokens)

    async def settle(self, grant: Grant, reserved: int, used: int) -> None:
        self.give_back(grant, reserved, used)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
