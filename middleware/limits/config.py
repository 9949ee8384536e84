"""Configuration of who may call Fluido and how much: API keys, rate limits, and the Redis that shares them.

Key material is read from the environment or a file once, hashed at once, and only the hash is kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config_reader import Reader
from proxy.limits import RateLimits, read_limits

LIMIT_BACKENDS = ("memory", "redis")
FAIL_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    digest: bytes  # sha256 of the key; the key itself is never kept
    limits: RateLimits = RateLimits()
    models: Mapping[str, RateLimits] = field(default_factory=dict)  # per model alias
    share_cache: bool = False  # cached answers are this key's own unless it opts into the shared pool
    admin: bool = False  # may purge the cache


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    backend: str = "memory"
    fail: str = "open"  # when the Redis backend is unreachable: let requests through, or refuse them
    client: RateLimits = RateLimits()  # for each client IP when no keys are configured
    default_max_tokens: int = 512  # reserved against TPM when a request sets no max_tokens
    lease_seconds: float = 900.0  # a concurrency slot held longer than this is reclaimed
    trusted_proxies: tuple[str, ...] = ()  # addresses/CIDRs whose X-Forwarded-For is believed


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    timeout: float = 0.5  # seconds per command; past it the backend counts as unreachable


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _key_material(r: Reader, environ: Mapping[str, str]) -> str:
    env_name, file_name = r.text("key_env", ""), r.text("key_file", "")
    if bool(env_name) == bool(file_name):
        r.problems.append(f"{r.path}: set exactly one of key_env (a variable's name) or key_file (a path)")
        return ""
    if env_name:
        value = environ.get(env_name, "")
        if not value:
            r.problems.append(f"{r.path}.key_env: the environment variable {env_name} is not set")
        return value
    try:
        value = Path(file_name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        r.problems.append(f"{r.path}.key_file: cannot read {file_name} ({exc.strerror})")
        return ""
    if not value:
        r.problems.append(f"{r.path}.key_file: {file_name} is empty")
    return value


def parse_keys(
    table: dict[str, Any], problems: list[str], environ: Mapping[str, str]
) -> dict[str, KeyConfig]:
    keys: dict[str, KeyConfig] = {}
    seen: dict[bytes, str] = {}
    for name, raw in table.items():
        r = Reader(raw, f"keys.{name}", problems)
        material = _key_material(r, environ)
        limits = read_limits(r)
        share_cache, admin = r.boolean("share_cache", False), r.boolean("admin", False)
        models = {
            alias: _limits_table(Reader(t, f"keys.{name}.models.{alias}", problems))
            for alias, t in r.table_of("models").items()
        }
        r.done()
        digest = key_digest(material)
        if material and digest in seen:
            problems.append(f"keys.{name}: the same key as keys.{seen[digest]}")
        seen[digest] = name
        keys[name] = KeyConfig(name, digest, limits, models, share_cache=share_cache, admin=admin)
    return keys


def _limits_table(r: Reader) -> RateLimits:
    limits = read_limits(r)
    r.done()
    return limits


def parse_limits(r: Reader) -> LimitsConfig:
    d = LimitsConfig()
    proxies = r.strings("trusted_proxies")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            r.problems.append(f"limits.trusted_proxies: {proxy!r} is not an IP address or network")
    cfg = LimitsConfig(
        backend=r.text("backend", d.backend, LIMIT_BACKENDS),
        fail=r.text("fail", d.fail, FAIL_MODES),
        client=read_limits(r),
        default_max_tokens=r.integer("default_max_tokens", d.default_max_tokens, 1),
        lease_seconds=r.number("lease_seconds", d.lease_seconds),
        trusted_proxies=proxies,
    )
    r.done()
    return cfg


def parse_redis(r: Reader) -> RedisConfig:
    d = RedisConfig()
    url = r.text("url", d.url)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        r.problems.append(f"redis.url: must be a redis://, rediss:// or unix:// URL (got {url!r})")
    cfg = RedisConfig(url=url, timeout=r.number("timeout", d.timeout))
    r.done()
    return cfg
