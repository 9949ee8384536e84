"""Redis as every part of Fluido opens it (the rate limiter, the response cache).

redis-py's default pool refuses a command outright once 100 are in flight (``MaxConnectionsError``). Under a
burst of requests that looked exactly like Redis being down: limits failed open (or closed, with 503s) and
the cache missed, at the moment they mattered most. A blocking pool makes a burst wait its turn for one of
a bounded number of connections instead. Waiting behind our own burst is not Redis being unreachable, so the
wait has its own, longer bound; a Redis that is really gone still fails each command within ``timeout``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

POOL_SIZE = 64  # a Lua check takes well under a millisecond: 64 connections serve thousands a second
POOL_WAIT_SECONDS = 5.0  # a burst of hundreds of requests can keep the event loop busy for a second or two
E = TypeVar("E", bound=Exception)


def open_redis(url: str, timeout: float, **options: Any) -> redis.Redis:
    """A client whose commands give up after ``timeout`` seconds (plus any wait for a free connection)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=max(timeout, POOL_WAIT_SECONDS),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **options,
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


def unreachable(error: type[E], exc: RedisError) -> E:
    """A part's own "unavailable" error for a failed Redis command, with the message every part gives."""
    return error(f"Redis is unreachable ({type(exc).__name__}).")
