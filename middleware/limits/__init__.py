"""Who may call and how much: API keys (an ASGI layer around /v1 and /admin), rate limits (a chain link),
the limiters that keep the counts (in memory, or in Redis for several replicas) and their config sections."""

from middleware.limits.admin import ADMIN_PREFIXES, AdminOnly
from middleware.limits.auth import GUARDED, Authenticate, KeyMatcher
from middleware.limits.config import (
    KeyConfig,
    LimitsConfig,
    RedisConfig,
    parse_keys,
    parse_limits,
    parse_redis,
)
from middleware.limits.limiter import MemoryLimiter
from middleware.limits.rate_limit import RateLimit
from middleware.limits.redis_limiter import RedisLimiter

__all__ = [
    "ADMIN_PREFIXES",
    "GUARDED",
    "AdminOnly",
    "Authenticate",
    "KeyConfig",
    "KeyMatcher",
    "LimitsConfig",
    "MemoryLimiter",
    "RateLimit",
    "RedisConfig",
    "RedisLimiter",
    "parse_keys",
    "parse_limits",
    "parse_redis",
]
