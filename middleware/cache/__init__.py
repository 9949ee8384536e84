"""The response cache: exact repeats and, when enabled, near-repeats found by meaning (the semantic index,
loaded in the background because it needs an embedding model and Chroma), the stores that hold the
answers, and the admin route that purges them."""

from middleware.cache.config import CacheConfig, SemanticConfig, parse_cache
from middleware.cache.flow import ResponseCache, attach_semantic_index
from middleware.cache.purge import CachePurge, Purge
from middleware.cache.store import CacheStore, MemoryStore, RedisStore

__all__ = [
    "CacheConfig",
    "CachePurge",
    "CacheStore",
    "MemoryStore",
    "Purge",
    "RedisStore",
    "ResponseCache",
    "SemanticConfig",
    "attach_semantic_index",
    "parse_cache",
]
