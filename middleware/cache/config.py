"""Configuration of the response cache: exact (memory or Redis) and semantic (Chroma + embeddings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.config_reader import Reader

CACHE_BACKENDS = ("memory", "redis")


@dataclass(frozen=True, slots=True)
class SemanticConfig:
    enabled: bool = False
    classes: tuple[str, ...] = ("short",)  # query classes whose questions may be answered by a near-repeat
    threshold: float = 0.85  # cosine similarity a candidate needs, unless its class has its own below
    thresholds: Mapping[str, float] = field(default_factory=dict)
    max_turns: int = 1  # conversations with more user turns skip the semantic cache
    path: str = ".fluido/chroma"  # the embedded Chroma's directory ...
    host: str = ""  # ... or a Chroma server (chroma run)
    port: int = 8000
    embedding_cache: str = ".fluido/embeddings.sqlite"  # "" = in memory only
    hnsw_m: int = 16
    hnsw_construction_ef: int = 100
    hnsw_search_ef: int = 64


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    backend: str = "memory"  # "redis": shared by replicas, through [redis]
    ttl_seconds: float = 3600.0
    max_bytes: int = 256 * 1024 * 1024  # the memory backend's bound
    sampled: bool = False  # also cache requests that sample (temperature > 0 and no seed)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)


def _semantic(r: Reader) -> SemanticConfig:
    d = SemanticConfig()
    thresholds: dict[str, float] = {}
    for name, value in r.table_of("thresholds").items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            r.problems.append(f"cache.semantic.thresholds.{name}: must be a number in (0, 1]")
        else:
            thresholds[name] = float(value)
    threshold = r.number("threshold", d.threshold)
    if threshold > 1:
        r.problems.append("cache.semantic.threshold: must be at most 1")
    cfg = SemanticConfig(
        enabled=r.boolean("enabled", d.enabled),
        classes=r.strings("classes") if "classes" in r.table else d.classes,
        threshold=threshold,
        thresholds=thresholds,
        max_turns=r.integer("max_turns", d.max_turns, 1),
        path=r.text("path", d.path),
        host=r.text("host", d.host),
        port=r.integer("port", d.port, 1, 65535),
        embedding_cache=r.text("embedding_cache", d.embedding_cache),
        hnsw_m=r.integer("hnsw_m", d.hnsw_m, 2),
        hnsw_construction_ef=r.integer("hnsw_construction_ef", d.hnsw_construction_ef, 1),
        hnsw_search_ef=r.integer("hnsw_search_ef", d.hnsw_search_ef, 1),
    )
    r.done()
    return cfg


def parse_cache(r: Reader) -> CacheConfig:
    d = CacheConfig()
    semantic: dict[str, Any] = r.table_of("semantic")
    cfg = CacheConfig(
        enabled=r.boolean("enabled", d.enabled),
        backend=r.text("backend", d.backend, CACHE_BACKENDS),
        ttl_seconds=r.number("ttl_seconds", d.ttl_seconds),
        max_bytes=r.integer("max_bytes", d.max_bytes, 1024),
        sampled=r.boolean("sampled", d.sampled),
        semantic=_semantic(Reader(semantic, "cache.semantic", r.problems)),
    )
    r.done()
    return cfg
