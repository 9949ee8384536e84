"""The Ollama door's routes, as the app factory mounts them."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.asgi import BodyLimits, send_bytes, trace_of
from proxy.config_upstreams import ModelConfig
from proxy.door import ChatRoute
from proxy.embed_door import EmbedRoute
from proxy.ollama_api.decode import parse_chat, parse_generate
from proxy.ollama_api.embed import OllamaEmbed
from proxy.ollama_api.errors import NotThroughFluido, send_ollama_error
from proxy.ollama_api.models import ModelRoutes
from proxy.ollama_api.routes import OllamaChat
from proxy.types import Handler
from proxy.upstream.router import Router

# The Ollama API version whose shapes Fluido speaks; clients compare it to decide what they may send.
OLLAMA_VERSION = "0.12.0"
# Model management happens on the upstream servers; through a proxy these routes could only mislead.
MANAGEMENT = ("/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs/{digest:path}")
_ANY_METHOD = ["GET", "POST", "PUT", "DELETE", "PATCH"]


class App:
    """A coroutine function of (scope, receive, send) as an ASGI app (Starlette calls plain functions with a
    request and expects a response)."""

    __slots__ = ("fn",)

    def __init__(self, fn: ASGIApp) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fn(scope, receive, send)


async def root(request: Request) -> Response:
    """GET (and HEAD) /: the line Ollama's clients probe for."""
    return PlainTextResponse("Ollama is running")


async def version(scope: Scope, receive: Receive, send: Send) -> None:
    body = orjson.dumps({"version": OLLAMA_VERSION})
    await send_bytes(send, 200, body, [(b"content-type", b"application/json")])


async def not_through_fluido(scope: Scope, receive: Receive, send: Send) -> None:
    route = f"{scope['method']} {scope['path']}"
    error = NotThroughFluido(
        f"{route} is not available: Fluido is a proxy, and models are managed on the upstream servers "
        "(pull, create, copy or delete them there, then give them an alias in Fluido's config)."
    )
    trace = trace_of(scope)
    trace.error_type, trace.error_code = error.type, error.code or ""
    await send_ollama_error(send, error, [])


def ollama_routes(
    models: Mapping[str, ModelConfig], chain: Handler, router: Router, limits: BodyLimits, content_chars: int
) -> tuple[list[Route], dict[tuple[str, str], ASGIApp]]:
    """The routes, and the two busiest as hot-path entries (method, path) -> handler."""
    chat = ChatRoute(OllamaChat(router, parse_chat, generate=False), chain, limits, content_chars)
    generate = ChatRoute(OllamaChat(router, parse_generate, generate=True), chain, limits, content_chars)
    embed = EmbedRoute(OllamaEmbed(models, legacy=False), router, limits)
    embeddings = EmbedRoute(OllamaEmbed(models, legacy=True), router, limits)
    listing = ModelRoutes(models, {name: up.adapter for name, up in router.upstreams.items()}, limits)
    routes = [
        Route("/", root, methods=["GET"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
        Route("/api/tags", App(listing.tags), methods=["GET"]),
        Route("/api/show", App(listing.show), methods=["POST"]),
        Route("/api/ps", App(listing.ps), methods=["GET"]),
        Route("/api/version", App(version), methods=["GET"]),
        *(Route(path, App(not_through_fluido), methods=_ANY_METHOD) for path in MANAGEMENT),
    ]
    return routes, {("POST", "/api/chat"): chat, ("POST", "/api/generate"): generate}
