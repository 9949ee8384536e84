"""Where cached replies live: in memory (bounded by bytes, LRU, TTL) or in Redis (TTL, compressed), shared
by every replica. Keys look like ``fluido:cache:<namespace>:<hash>``, so a namespace can be purged alone.

Redis errors are translated here, and only here, into ``CacheUnavailable``.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from proxy.services.redis_pool import open_redis, unreachable

PREFIX = "fluido:cache:"


class CacheUnavailable(Exception):
    """The cache's store cannot be reached."""


def cache_key(namespace: str, digest: str) -> str:
    return f"{PREFIX}{namespace}:{digest}"


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def purge(self, namespace: str | None) -> int: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """One process's cache: least recently used entries go first once ``max_bytes`` is reached."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, expiry)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            await self.delete(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        await self.delete(key)
        self._entries[key] = (value, self.clock() + ttl)
        self.size += len(value)
        while self.size > self.max_bytes:
            _, (evicted, _) = self._entries.popitem(last=False)
            self.size -= len(evicted)

    async def delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry[0])

    async def purge(self, namespace: str | None) -> int:
        prefix = PREFIX if namespace is None else cache_key(namespace, "")
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            await self.delete(key)
        return len(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStore:
    """Shared by replicas; values are zlib-compressed JSON and expire with their TTL."""

    def __init__(self, url: str, timeout: float) -> None:
        self.client = open_redis(url, timeout)

    async def get(self, key: str) -> bytes | None:
        try:
            raw = await self.client.get(key)
        except RedisError as exc:
            raise unreachable(CacheUnavailable, exc) from exc
        if not isinstance(raw, bytes):
            return None
        try:
            return zlib.decompress(raw)
        except zlib.error:
            await self.delete(key)  # corrupt: a miss, and gone
            return None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self.client.set(key, zlib.compress(value, 1), px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            raise unreachable(CacheUnavailable, exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await self.client.unlink(key)
        except RedisError as exc:
            raise unreachable(CacheUnavailable, exc) from exc

    async def purge(self, namespace: str | None) -> int:
        pattern = (PREFIX if namespace is None else cache_key(namespace, "")) + "*"
        removed = 0
        try:
            async for key in self.client.scan_iter(match=pattern, count=500):
                removed += await self.client.unlink(key)
        except RedisError as exc:
            raise unreachable(CacheUnavailable, exc) from exc
        return removed

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise unreachable(CacheUnavailable, exc) from exc

    async def close(self) -> None:
        await self.client.aclose()
