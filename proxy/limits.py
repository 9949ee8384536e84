"""The rate-limit contract shared by the router (each upstream's own limit) and ``middleware.limits``.

A ``Bucket`` is one limited subject (an API key, a key on one model alias, a client IP, an upstream).
``acquire`` checks every bucket of a request and consumes from all of them only if all allow it, in one
step; ``settle`` gives back what the request did not use and releases its concurrency slot. The limiters
themselves (in memory, in Redis) live in ``middleware.limits``; the app factory hands one to the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from proxy.config_reader import Reader

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per minute, tokens per minute and requests at once; 0 means no limit."""

    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)


def read_limits(r: Reader) -> RateLimits:
    return RateLimits(
        rpm=r.integer("rpm", 0), tpm=r.integer("tpm", 0), concurrency=r.integer("concurrency", 0)
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limited subject. ``scope`` groups the buckets of one client (a Redis hash tag)."""

    scope: str
    name: str
    limits: RateLimits


# Budgets and grants are made for every request: as named tuples, each is built in well under half the time
# a frozen dataclass takes (whose every field is set through object.__setattr__), and is as immutable.
class Budget(NamedTuple):
    """One limit's state for the x-ratelimit-* headers: its size, what is left, seconds until full."""

    limit: int
    remaining: int
    reset: float


class Grant(NamedTuple):
    allowed: bool
    lease: str = ""
    retry_after: float = 0.0
    refused_by: str = ""  # "rpm", "tpm" or "concurrency"
    requests: Budget | None = None  # the first bucket's, after this request
    tokens: Budget | None = None
    buckets: tuple[Bucket, ...] = ()


class LimiterUnavailable(Exception):
    """The limiter's backend cannot be reached."""


class Limiter(Protocol):
    async def acquire(self, buckets: Sequence[Bucket], tokens: int) -> Grant: ...

    async def settle(self, grant: Grant, reserved: int, used: int) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def budget(capacity: int, level: float) -> Budget:
    return Budget(capacity, max(int(level), 0), max(capacity - level, 0) * WINDOW / capacity)
