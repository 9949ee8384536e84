"""Configuration: ``config.toml`` plus ``FLUIDO_<SECTION>__<KEY>`` environment overrides, loaded once into
frozen dataclasses. Every problem is reported at once, each naming its key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleware.buffer.config import BufferConfig, parse_buffer
from middleware.cache import CacheConfig, parse_cache
from middleware.classify import ClassifierConfig, parse_classifier
from middleware.limits import KeyConfig, LimitsConfig, RedisConfig, parse_keys, parse_limits, parse_redis
from middleware.rag.config import RagConfig, parse_model_rag, parse_rag
from proxy.config_reader import Reader
from proxy.config_upstreams import ModelConfig, UpstreamConfig, parse_model, parse_upstream

ENV_PREFIX = "FLUIDO_"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout: float = 10.0  # seconds for a request's headers to arrive, from its first byte
    body_timeout: float = 30.0  # seconds for a request's whole body to arrive, once its headers have


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "json"
    access_log: bool = True
    include_content: bool = False
    content_max_chars: int = 2000
    queue_size: int = 10_000


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    port: int = 0  # > 0: /metrics is served on this port (same host as the server) and not on the main one
    require_key: bool = False  # true: /metrics needs an admin API key, like /admin/*


@dataclass(frozen=True, slots=True)
class ReadyConfig:
    model: str = ""  # the alias /ready answers for; "" = the first configured alias
    cache_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ready: ReadyConfig = field(default_factory=ReadyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    keys: Mapping[str, KeyConfig] = field(default_factory=dict)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    models: Mapping[str, ModelConfig] = field(default_factory=dict)


def _server(r: Reader) -> ServerConfig:
    d = ServerConfig()
    cfg = ServerConfig(
        host=r.text("host", d.host),
        port=r.integer("port", d.port, 1, 65535),
        workers=r.integer("workers", d.workers, 1, 256),
        max_body_bytes=r.integer("max_body_bytes", d.max_body_bytes, 1024),
        header_timeout=r.number("header_timeout", d.header_timeout),
        body_timeout=r.number("body_timeout", d.body_timeout),
    )
    r.done()
    return cfg


def _log(r: Reader) -> LogConfig:
    d = LogConfig()
    cfg = LogConfig(
        level=r.text("level", d.level, ("debug", "info", "warning", "error")),
        format=r.text("format", d.format, ("json", "console")),
        access_log=r.boolean("access_log", d.access_log),
        include_content=r.boolean("include_content", d.include_content),
        content_max_chars=r.integer("content_max_chars", d.content_max_chars, 1),
        queue_size=r.integer("queue_size", d.queue_size, 1),
    )
    r.done()
    return cfg


def _metrics(r: Reader) -> MetricsConfig:
    d = MetricsConfig()
    cfg = MetricsConfig(
        enabled=r.boolean("enabled", d.enabled),
        port=r.integer("port", d.port, 0, 65535),
        require_key=r.boolean("require_key", d.require_key),
    )
    r.done()
    return cfg


def _ready(r: Reader, aliases: Mapping[str, ModelConfig]) -> ReadyConfig:
    d = ReadyConfig()
    model = r.text("model", d.model) or next(iter(aliases), "")
    if aliases and model not in aliases:
        r.problems.append(f"ready.model: no model alias named {model!r} in [models]")
    cfg = ReadyConfig(model=model, cache_seconds=r.number("cache_seconds", d.cache_seconds))
    r.done()
    return cfg


def parse(data: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a raw TOML document; raise ConfigError listing every problem. ``environ`` holds the
    variables that ``key_env`` and ``api_key_env`` name (default: the process environment)."""
    problems: list[str] = []
    root = Reader(data, "", problems)
    server = _server(Reader(root.table_of("server"), "server", problems))
    log = _log(Reader(root.table_of("log"), "log", problems))
    upstreams = {
        name: parse_upstream(name, Reader(table, f"upstreams.{name}", problems))
        for name, table in root.table_of("upstreams").items()
    }
    # [models.<alias>.rag] belongs to the RAG section: read there, so the model section stays RAG-free.
    model_rag = {}
    for alias, table in root.table_of("models").items():
        if isinstance(table, dict) and "rag" in table:
            reader = Reader(table.pop("rag"), f"models.{alias}.rag", problems)
            model_rag[alias] = parse_model_rag(reader)
    models = {
        alias: parse_model(alias, Reader(table, f"models.{alias}", problems), upstreams)
        for alias, table in root.table_of("models").items()
    }
    if not models:
        problems.append("models: at least one model alias must be configured")
    metrics = _metrics(Reader(root.table_of("metrics"), "metrics", problems))
    ready = _ready(Reader(root.table_of("ready"), "ready", problems), models)
    limits = parse_limits(Reader(root.table_of("limits"), "limits", problems))
    redis = parse_redis(Reader(root.table_of("redis"), "redis", problems))
    keys = parse_keys(root.table_of("keys"), problems, os.environ if environ is None else environ)
    if metrics.require_key and not any(key.admin for key in keys.values()):
        problems.append("metrics.require_key: needs an admin key in [keys] to scrape with")
    if metrics.port and metrics.port == server.port:
        problems.append("metrics.port: must differ from server.port")
    for key in keys.values():
        problems += [
            f"keys.{key.name}.models.{alias}: no such model alias"
            for alias in key.models
            if alias not in models
        ]
    classifier = parse_classifier(Reader(root.table_of("classifier"), "classifier", problems), models)
    cache = parse_cache(Reader(root.table_of("cache"), "cache", problems))
    buffer = parse_buffer(Reader(root.table_of("buffer"), "buffer", problems), upstreams)
    rag = dataclasses.replace(parse_rag(Reader(root.table_of("rag"), "rag", problems)), models=model_rag)
    if model_rag and not rag.enabled:
        problems += [f"models.{alias}.rag: needs [rag] enabled = true" for alias in model_rag]
    root.done()
    if problems:
        raise ConfigError(problems)
    return Config(
        server=server, log=log, metrics=metrics, ready=ready, limits=limits, redis=redis, keys=keys,
        classifier=classifier, cache=cache, rag=rag, buffer=buffer, upstreams=upstreams, models=models,
    )  # fmt: skip


def _env_value(raw: str) -> Any:
    """An override's value is read as a TOML value when it is one (9000, true, "x", [..]), else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``FLUIDO_SERVER__PORT=9000``-style variables; ``__`` separates nested keys."""
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        *sections, key = name[len(ENV_PREFIX) :].lower().split("__")
        table = data
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError([f"{name}: {'.'.join(sections)} is not a table"])
        table[key] = _env_value(raw)
    return data


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    environ = os.environ if environ is None else environ
    return parse(apply_env(data, environ), environ)
