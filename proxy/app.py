"""The app factory: ``create_app(config) -> Starlette``. Nothing is opened until the lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import BinaryIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from middleware.cache import (
    CachePurge,
    Purge,
    RedisStore,
    attach_semantic_index,
)
from middleware.limits import (
    RedisLimiter,
)
from proxy.app_parts import (
    body_limits,
    build_asgi_middleware,
    build_buffer_parts,
    build_cache,
    build_limiter,
    build_metrics_listener,
    build_middleware,
    build_rag,
    build_upstreams,
)
from proxy.asgi import App
from proxy.chain import build_chain
from proxy.config import Config
from proxy.door import ChatRoute
from proxy.embed_door import EmbedRoute
from proxy.errors import InvalidRequest, render
from proxy.http_protocol import HEADER_TIMEOUT_STATE
from proxy.observe import Dependency, Metrics, Readiness, configure_logging
from proxy.observe.runtime import Runtime
from proxy.ollama_api.errors import error_body, is_ollama_path
from proxy.ollama_api.mount import ollama_routes
from proxy.routes import Models, OpenAIChat, OpenAIEmbeddings, health
from proxy.upstream import Router, warm_up


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
        if any(m.stores for m in cfg.rag.models.values()):
            dependencies["rag_stores"] = Dependency(rag.check_stores, required=False)
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
