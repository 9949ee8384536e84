"""The app factory: ``create_app(config) -> Starlette``. Nothing is opened until the lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware as ASGIMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters import adapter_for
from adapters.openai_compat import OpenAICompatAdapter
from middleware.buffer.build import BufferParts, build_buffer
from middleware.buffer.shared import LeaseCount
from middleware.cache import (
    CachePurge,
    CacheStore,
    MemoryStore,
    Purge,
    RedisStore,
    ResponseCache,
    attach_semantic_index,
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
from proxy.asgi import App, BodyLimits
from proxy.chain import build_chain
from proxy.config import Config
from proxy.door import ChatRoute, EmbedRoute
from proxy.errors import InvalidRequest, render
from proxy.http_protocol import HEADER_TIMEOUT_STATE
from proxy.limits import Limiter
from proxy.observe import Dependency, LogWriter, Metrics, Observability, Readiness, configure_logging
from proxy.observe.metrics_port import MetricsListener
from proxy.observe.runtime import Runtime
from proxy.ollama_api.errors import error_body, is_ollama_path
from proxy.ollama_api.mount import ollama_routes
from proxy.routes import Models, OpenAIChat, OpenAIEmbeddings, health
from proxy.types import Middleware
from proxy.upstream import CircuitBreaker, EmbeddedServer, Router, Upstream, warm_up


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
        chain.append(Classify(build_classifier(cfg.classifier), cfg.classifier.profiles))
        if cfg.classifier.compaction:
            chain.append(Compact(cfg.classifier.profiles, build_token_counter(cfg, upstreams)))
    if rag is not None:
        chain.append(rag.version)  # the cache's key covers the stores' generations ...
    if cache is not None:
        chain.append(cache)
    if rag is not None:
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = InvalidRequest(f"{request.method} {request.url.path}: {exc.detail}")
    error.status = exc.status_code
    body = error_body(error) if is_ollama_path(request.url.path) else render(error)
    return Response(body, status_code=exc.status_code, media_type="application/json")


def create_app(cfg: Config, log_sink: BinaryIO | None = None) -> Starlette:
    upstreams = build_upstreams(cfg)
    metrics = Metrics(cfg.models, cfg.upstreams, cfg.classifier.classes) if cfg.metrics.enabled else None
    limiter = build_limiter(cfg)
    router = Router(cfg.models, upstreams, limiter)
    cache = build_cache(cfg, metrics)
    buffer, buffer_limiter = build_buffer_parts(cfg, limiter, metrics, upstreams)
    rag = build_rag(cfg)
    chain = build_chain(build_middleware(cfg, limiter, metrics, cache, upstreams, buffer, rag), router)
    log_writer = configure_logging(cfg.log, log_sink)
    if metrics is not None:
        log_writer.on_drop = metrics.log_dropped.inc
    breakers = {name: up.breaker for name, up in upstreams.items()}

    listener = build_metrics_listener(cfg, metrics, breakers) if metrics and cfg.metrics.port else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, float]]:
        log_writer.start()
        if listener is not None:
            await listener.start()
        warming = asyncio.create_task(warm_up(cfg.models, upstreams))
        # Everything built so far lives as long as the process: keep it out of every garbage collection.
        gc.freeze()
        # The semantic index loads an embedding model: in the background, and used once it is ready.
        indexing = asyncio.create_task(attach_semantic_index(cache, cfg.cache.semantic)) if cache else None
        if rag is not None:
            rag.start()  # loads its model in the background; chat goes on without context until then
        if buffer is not None:
            buffer.start()
        try:
            # The lifespan state reaches every connection's protocol: the header deadline is enforced there.
            yield {HEADER_TIMEOUT_STATE: cfg.server.header_timeout}
        finally:
            for task in (warming, indexing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if buffer is not None:
                await buffer.stop()
            if buffer_limiter is not None:
                await buffer_limiter.close()
            if cache is not None:
                await cache.close()
            if rag is not None:
                await rag.close()
            for up in upstreams.values():
                await up.adapter.close()
                if up.launcher is not None:
                    await up.launcher.stop()
            if limiter is not None:
                await limiter.close()
            if listener is not None:
                await listener.stop()
            log_writer.close()

    async def metrics_endpoint(request: Request) -> Response:
        assert metrics is not None
        metrics.set_circuits(breakers)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    content_chars = cfg.log.content_max_chars if cfg.log.include_content else 0
    dependencies = {}
    if isinstance(limiter, RedisLimiter):
        dependencies["redis"] = Dependency(limiter.ping, required=cfg.limits.fail == "closed")
    if cache is not None and isinstance(cache.store, RedisStore):
        dependencies["cache_redis"] = Dependency(cache.store.ping, required=False)
    if cache is not None and cfg.cache.semantic.enabled:
        dependencies["chroma"] = Dependency(cache.ping_index, required=False)
    if rag is not None:
        dependencies["rag_chroma"] = Dependency(rag.ping, required=False)
    readiness = Readiness(upstreams, cfg.models[cfg.ready.model], cfg.ready.cache_seconds, dependencies)
    limits = body_limits(cfg)
    runtime = Runtime({key.name for key in cfg.keys.values() if key.admin}, keyed=bool(cfg.keys))
    chat = ChatRoute(OpenAIChat(), chain, limits, content_chars)
    embeddings = EmbedRoute(OpenAIEmbeddings(), router, limits)
    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", Models(cfg), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", readiness, methods=["GET"]),
        Route("/admin/runtime", runtime, methods=["GET"]),
    ]
    ollama, ollama_hot = ollama_routes(cfg.models, chain, router, limits, content_chars)
    routes += ollama
    if metrics is not None and listener is None:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if rag is not None:
        routes += rag.api.routes()
    if cache is not None:
        purge = CachePurge(Purge(cache, cfg.keys), limits)
        routes.append(Route("/admin/cache/purge", purge, methods=["POST"]))
    app = App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=build_asgi_middleware(cfg, metrics, breakers, log_writer),
        hot_routes={
            ("POST", "/v1/chat/completions"): chat,
            ("POST", "/v1/embeddings"): embeddings,
            **ollama_hot,
        },
    )
    app.state.router = router
    app.state.buffer = buffer
    app.state.metrics = metrics
    app.state.log_writer = log_writer
    return app
