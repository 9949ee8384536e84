"""The app factory's parts: each upstream, store, chain link and listener, built from the config."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.middleware import Middleware as ASGIMiddleware

from adapters import adapter_for
from adapters.openai_compat import OpenAICompatAdapter
from middleware.buffer import BufferParts, LeaseCount, build_buffer
from middleware.cache import (
    CacheStore,
    MemoryStore,
    RedisStore,
    ResponseCache,
)
from middleware.classify import Classify, Compact, TokenCounter, Tokenizer, build_classifier
from middleware.limits import (
    ADMIN_PREFIXES,
    GUARDED,
    AdminOnly,
    Authenticate,
    KeyMatcher,
    MemoryLimiter,
    RateLimit,
    RedisLimiter,
)
from middleware.rag import Rag
from proxy.asgi import BodyLimits
from proxy.config import Config
from proxy.limits import Limiter
from proxy.observe import LogWriter, Metrics, Observability
from proxy.observe.metrics_port import MetricsListener
from proxy.types import Middleware
from proxy.upstream import CircuitBreaker, EmbeddedServer, Upstream


def build_upstreams(cfg: Config) -> dict[str, Upstream]:
    upstreams = {}
    for name, up in cfg.upstreams.items():
        adapter = adapter_for(up)
        launcher = EmbeddedServer(name, up.url, up.embedded, adapter.health) if up.embedded else None
        upstreams[name] = Upstream(
            up, adapter, CircuitBreaker(up.breaker_failures, up.breaker_cooldown), launcher
        )
    return upstreams


def build_limiter(cfg: Config) -> Limiter | None:
    """A limiter when any limit is configured: for client IPs, keys, key-and-model pairs or upstreams."""
    limited = (
        cfg.limits.client.any
        or any(key.limits.any or any(m.any for m in key.models.values()) for key in cfg.keys.values())
        or any(up.limits.any for up in cfg.upstreams.values())
    )
    if not limited:
        return None
    if cfg.limits.backend == "redis":
        return RedisLimiter(cfg.redis, cfg.limits.lease_seconds)
    return MemoryLimiter(cfg.limits.lease_seconds)


def build_cache(cfg: Config, metrics: Metrics | None) -> ResponseCache | None:
    if not cfg.cache.enabled:
        return None
    store: CacheStore = (
        RedisStore(cfg.redis.url, cfg.redis.timeout)
        if cfg.cache.backend == "redis"
        else MemoryStore(cfg.cache.max_bytes)
    )
    on_unavailable = metrics.cache_unavailable.inc if metrics is not None else (lambda: None)
    return ResponseCache(store, cfg.cache, cfg.keys, on_unavailable=on_unavailable)


def build_token_counter(cfg: Config, upstreams: Mapping[str, Upstream]) -> TokenCounter | None:
    """Real token counts for the aliases whose first target's upstream offers its tokenizer."""
    tokenizers: dict[str, tuple[Tokenizer, str]] = {}
    for alias, model in cfg.models.items():
        first = model.targets[0]
        adapter = upstreams[first.upstream].adapter
        if cfg.upstreams[first.upstream].tokenize and isinstance(adapter, OpenAICompatAdapter):
            tokenizers[alias] = (adapter, first.model)
    return TokenCounter(tokenizers) if tokenizers else None


def build_buffer_parts(
    cfg: Config, limiter: Limiter | None, metrics: Metrics | None, upstreams: Mapping[str, Upstream]
) -> tuple[BufferParts | None, Limiter | None]:
    """The adaptive buffer, and the limiter it opened to share in-flight counts (to close at the end)."""
    if not cfg.buffer.enabled:
        return None, None
    own: Limiter | None = None
    shared = None
    if cfg.limits.backend == "redis":
        if not isinstance(limiter, RedisLimiter):
            limiter = own = RedisLimiter(cfg.redis, cfg.limits.lease_seconds)
        shared = LeaseCount(limiter)
    breakers = {name: up.breaker for name, up in upstreams.items()}
    parts = build_buffer(cfg.buffer, cfg.upstreams, cfg.models, breakers, metrics, shared)
    return parts, own


def body_limits(cfg: Config) -> BodyLimits:
    return BodyLimits(cfg.server.max_body_bytes, cfg.server.body_timeout)


def build_rag(cfg: Config) -> Rag | None:
    """Retrieval and injection when ``[rag]`` is enabled; each alias's context window comes from its first
    target: the embedded server's n_ctx, or the largest num_ctx allowed for an Ollama model."""
    if not cfg.rag.enabled:
        return None
    windows = {}
    for alias, model in cfg.models.items():
        first = model.targets[0]
        embedded = cfg.upstreams[first.upstream].embedded
        windows[alias] = embedded.n_ctx if embedded is not None else first.max_context
    admins = {name: key.admin for name, key in cfg.keys.items()}
    return Rag(cfg.rag, admins, cfg.rag.models, windows, body_limits(cfg))


def build_middleware(
    cfg: Config,
    limiter: Limiter | None,
    metrics: Metrics | None,
    cache: ResponseCache | None,
    upstreams: Mapping[str, Upstream],
    buffer: BufferParts | None = None,
    rag: Rag | None = None,
) -> list[Middleware]:
    """The chain, outermost first. Each entry is present only when enabled in the config."""
    chain: list[Middleware] = []
    if limiter is not None:
        on_unavailable = metrics.limiter_unavailable.inc if metrics is not None else (lambda: None)
        chain.append(RateLimit(limiter, cfg.limits, cfg.keys, on_unavailable))
    if cfg.classifier.enabled:
        compact = None
        if cfg.classifier.compaction:
            compact = Compact(cfg.classifier.profiles, build_token_counter(cfg, upstreams))
        chain.append(Classify(build_classifier(cfg.classifier), cfg.classifier.profiles, compact))
    if rag is not None:
        chain.append(rag.version)  # the cache's key covers the stores' generations ...
    if cache is not None:
        chain.append(cache)
    if rag is not None:
        if buffer is not None:
            chain.append(buffer.buffer.early)  # a request the buffer would shed skips the retrieval
        chain.append(rag.inject)  # ... of the context injected here, after a miss
    if buffer is not None:
        chain.append(buffer.buffer)  # last: right before the router, which it keeps at L per upstream
    return chain


def build_asgi_middleware(
    cfg: Config, metrics: Metrics | None, breakers: Mapping[str, CircuitBreaker], log_writer: LogWriter
) -> list[ASGIMiddleware]:
    """The outer layers, outermost first: observability sees everything, authentication guards the APIs."""
    layers = []
    if metrics is not None or cfg.log.access_log:
        json_lines = log_writer if cfg.log.format == "json" else None
        layers.append(
            ASGIMiddleware(
                Observability,
                metrics=metrics,
                access_log=cfg.log.access_log,
                breakers=breakers,
                json_lines=json_lines,
            )
        )
    # /metrics joins the key-guarded operator routes when the config asks for it (on its own port, the
    # listener checks the key itself).
    metrics_route = ("/metrics",) if cfg.metrics.require_key and not cfg.metrics.port else ()
    operator = ADMIN_PREFIXES + metrics_route
    if cfg.keys or cfg.limits.trusted_proxies:
        guarded = GUARDED + metrics_route
        layers.append(
            ASGIMiddleware(
                Authenticate, keys=cfg.keys, trusted_proxies=cfg.limits.trusted_proxies, guarded=guarded
            )
        )
    layers.append(ASGIMiddleware(AdminOnly, keys=cfg.keys, prefixes=operator))
    return layers


def build_metrics_listener(
    cfg: Config, metrics: Metrics, breakers: Mapping[str, CircuitBreaker]
) -> MetricsListener:
    """/metrics on its own port, behind an admin key if the config says so."""

    def render_metrics() -> tuple[bytes, str]:
        metrics.set_circuits(breakers)
        return metrics.render()

    authorized = None
    if cfg.metrics.require_key:
        matcher = KeyMatcher(cfg.keys)

        def authorized(authorization: bytes | None) -> bool:
            name = matcher.match(authorization)
            return name is not None and cfg.keys[name].admin

    return MetricsListener(cfg.server.host, cfg.metrics.port, render_metrics, authorized)
