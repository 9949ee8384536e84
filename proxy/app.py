"""The app factory: ``create_app(config) -> Starlette``. Nothing is opened until the lifespan starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters import adapter_for
from proxy.breaker import CircuitBreaker
from proxy.chain import build_chain
from proxy.config import Config
from proxy.embedded import EmbeddedServer
from proxy.errors import InvalidRequest, render
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


def create_app(cfg: Config) -> Starlette:
    upstreams = build_upstreams(cfg)
    router = Router(cfg.models, upstreams)
    chain = build_chain(build_middleware(cfg), router)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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

    app = Starlette(
        routes=[
            Route(
                "/v1/chat/completions", ChatCompletions(chain, cfg.server.max_body_bytes), methods=["POST"]
            ),
            Route("/v1/embeddings", Embeddings(router, cfg.server.max_body_bytes), methods=["POST"]),
            Route("/v1/models", Models(cfg), methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.router = router
    return app
