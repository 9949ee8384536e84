"""The app factory: ``create_app(config) -> Starlette``. Nothing is opened until the lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware as ASGIMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters import adapter_for
from proxy.breaker import CircuitBreaker
from proxy.chain import build_chain
from proxy.config import Config
from proxy.embedded import EmbeddedServer
from proxy.errors import InvalidRequest, render
from proxy.logs import configure_logging
from proxy.metrics import Metrics
from proxy.observe import Observability
from proxy.ready import Readiness
from proxy.router import Router, Upstream
from proxy.routes import ChatCompletions, Embeddings, Models, health
from proxy.types import Middleware
from proxy.warmup import warm_up


def build_upstreams(cfg: Config) -> dict[str, Upstream]:
    upstreams = {}
    for name, up in cfg.upstreams.items():
        adapter = adapter_for(up)
        launcher = EmbeddedServer(name, up.url, up.embedded, adapter.health) if up.embedded else None
        upstreams[name] = Upstream(
            up, adapter, CircuitBreaker(up.breaker_failures, up.breaker_cooldown), launcher
        )
    return upstreams


def build_middleware(cfg: Config) -> list[Middleware]:
    """The chain, outermost first. Each entry is present only when enabled in the config."""
    return []


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = InvalidRequest(f"{request.method} {request.url.path}: {exc.detail}")
    error.status = exc.status_code
    return Response(render(error), status_code=exc.status_code, media_type="application/json")


def create_app(cfg: Config, log_sink: BinaryIO | None = None) -> Starlette:
    upstreams = build_upstreams(cfg)
    router = Router(cfg.models, upstreams)
    chain = build_chain(build_middleware(cfg), router)
    metrics = Metrics(cfg.models, cfg.upstreams) if cfg.metrics.enabled else None
    log_writer = configure_logging(cfg.log, log_sink)
    if metrics is not None:
        log_writer.on_drop = metrics.log_dropped.inc
    breakers = {name: up.breaker for name, up in upstreams.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log_writer.start()
        warming = asyncio.create_task(warm_up(cfg.models, upstreams))
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            for up in upstreams.values():
                await up.adapter.close()
                if up.launcher is not None:
                    await up.launcher.stop()
            log_writer.close()

    async def metrics_endpoint(request: Request) -> Response:
        assert metrics is not None
        metrics.set_circuits(breakers)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    content_chars = cfg.log.content_max_chars if cfg.log.include_content else 0
    routes = [
        Route(
            "/v1/chat/completions",
            ChatCompletions(chain, cfg.server.max_body_bytes, content_chars),
            methods=["POST"],
        ),
        Route("/v1/embeddings", Embeddings(router, cfg.server.max_body_bytes), methods=["POST"]),
        Route("/v1/models", Models(cfg), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route(
            "/ready",
            Readiness(upstreams, cfg.models[cfg.ready.model], cfg.ready.cache_seconds),
            methods=["GET"],
        ),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    observing = metrics is not None or cfg.log.access_log
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[
            ASGIMiddleware(Observability, metrics=metrics, access_log=cfg.log.access_log, breakers=breakers)
        ]
        if observing
        else [],
    )
    app.state.router = router
    app.state.metrics = metrics
    app.state.log_writer = log_writer
    return app
