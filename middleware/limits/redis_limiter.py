"""The Redis backend of the limiter: the same buckets as ``MemoryLimiter``, checked and consumed by one Lua
script in one round trip, on Redis's clock (so replicas with skewed clocks agree).

Redis errors are translated here, and only here, into ``LimiterUnavailable``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from redis.exceptions import RedisError

from middleware.limits.config import RedisConfig
from proxy.limits import WINDOW, Bucket, Budget, Grant, LimiterUnavailable, budget
from proxy.services.redis_pool import open_redis, unreachable

# KEYS: per bucket its requests, tokens and concurrency keys. ARGV: lease, lease seconds, tokens, then per
# bucket rpm, tpm, concurrency. Levels are returned as strings: Lua numbers would come back truncated.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local lease, ttl, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local n = (#ARGV - 4) / 3
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, ts = tonumber(v[1]) or cap, tonumber(v[2]) or now
  return math.min(cap, l + (now - ts) * cap / window)
end
local retry, refused, levels = 0, '', {}
for i = 0, n - 1 do
  local rpm, tpm, conc = tonumber(ARGV[5 + i*3]), tonumber(ARGV[6 + i*3]), tonumber(ARGV[7 + i*3])
  local rk, tk, ck = KEYS[1 + i*3], KEYS[2 + i*3], KEYS[3 + i*3]
  if rpm > 0 then
    levels[rk] = level(rk, rpm)
    if levels[rk] < 1 then retry = math.max(retry, (1 - levels[rk]) * window / rpm); refused = 'rpm' end
  end
  if tpm > 0 then
    levels[tk] = level(tk, tpm)
    local need = math.min(tokens, tpm)
    if levels[tk] < need then retry = math.max(retry, (need - levels[tk]) * window / tpm); refused = 'tpm' end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
    if redis.call('ZCARD', ck) >= conc then retry = math.max(retry, 1); refused = 'concurrency' end
  end
end
local ok = refused == '' and 1 or 0
if ok == 1 then
  for i = 0, n - 1 do
    local rpm, tpm, conc = tonumber(ARGV[5 + i*3]), tonumber(ARGV[6 + i*3]), tonumber(ARGV[7 + i*3])
    local rk, tk, ck = KEYS[1 + i*3], KEYS[2 + i*3], KEYS[3 + i*3]
    if rpm > 0 then
      levels[rk] = levels[rk] - 1
      redis.call('HSET', rk, 'l', tostring(levels[rk]), 't', tostring(now))
      redis.call('EXPIRE', rk, 2 * window)
    end
    if tpm > 0 then
      levels[tk] = levels[tk] - tokens
      redis.call('HSET', tk, 'l', tostring(levels[tk]), 't', tostring(now))
      redis.call('EXPIRE', tk, 2 * window)
    end
    if conc > 0 then
      redis.call('ZADD', ck, now + ttl, lease); redis.call('EXPIRE', ck, math.ceil(ttl))
    end
  end
end
return {ok, tostring(retry), refused, tostring(levels[KEYS[1]] or ''), tostring(levels[KEYS[2]] or '')}
"""

# KEYS: per bucket its tokens and concurrency keys. ARGV: lease, tokens to give back, then per bucket tpm.
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local lease, back, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, #ARGV - 4 do
  local tpm, tk, ck = tonumber(ARGV[4 + i]), KEYS[1 + i*2], KEYS[2 + i*2]
  if tpm > 0 and back ~= 0 then
    local v = redis.call('HMGET', tk, 'l', 't')
    local l, ts = tonumber(v[1]) or tpm, tonumber(v[2]) or now
    l = math.min(tpm, math.min(tpm, l + (now - ts) * tpm / window) + back)
    redis.call('HSET', tk, 'l', tostring(l), 't', tostring(now)); redis.call('EXPIRE', tk, 2 * window)
  end
  redis.call('ZREM', ck, lease)
end
return 1
"""


def _keys(b: Bucket) -> tuple[str, str, str]:
    # The {scope} hash tag keeps every key one script touches in one Redis Cluster slot.
    base = f"fluido:rl:{{{b.scope}}}:{b.name}"
    return f"{base}:r", f"{base}:t", f"{base}:c"


def _budget(capacity: int, raw: bytes | str) -> Budget | None:
    value = raw.decode() if isinstance(raw, bytes) else raw
    return budget(capacity, float(value)) if capacity and value else None


class RedisLimiter:
    """Exact limits across replicas sharing one Redis."""

    def __init__(self, cfg: RedisConfig, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self.client = open_redis(cfg.url, cfg.timeout, health_check_interval=30)
        self._acquire = self.client.register_script(ACQUIRE)
        self._settle = self.client.register_script(SETTLE)

    async def acquire(self, buckets: Sequence[Bucket], tokens: int) -> Grant:
        keys = [k for b in buckets for k in _keys(b)]
        lease = uuid.uuid4().hex
        args: list[str | int | float] = [lease, self.lease_seconds, tokens, WINDOW]
        args += [v for b in buckets for v in (b.limits.rpm, b.limits.tpm, b.limits.concurrency)]
        try:
            ok, retry, refused, requests_left, tokens_left = await self._acquire(keys=keys, args=args)
        except RedisError as exc:
            raise unreachable(LimiterUnavailable, exc) from exc
        first = buckets[0].limits
        return Grant(
            allowed=ok == 1,
            lease=lease if ok == 1 else "",
            retry_after=float(retry),
            refused_by=refused.decode() if isinstance(refused, bytes) else refused,
            requests=_budget(first.rpm, requests_left),
            tokens=_budget(first.tpm, tokens_left),
            buckets=tuple(buckets) if ok == 1 else (),
        )

    async def settle(self, grant: Grant, reserved: int, used: int) -> None:
        keys = [k for b in grant.buckets for k in _keys(b)[1:]]
        args: list[str | int | float] = [
            grant.lease,
            reserved - used,
            WINDOW,
            *(b.limits.tpm for b in grant.buckets),
        ]
        try:
            await self._settle(keys=keys, args=args)
        except RedisError as exc:
            raise unreachable(LimiterUnavailable, exc) from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise unreachable(LimiterUnavailable, exc) from exc

    async def close(self) -> None:
        await self.client.aclose()
