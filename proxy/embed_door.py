"""The embeddings route every door shares (``proxy.door`` holds the chat route): read, decode, route,
reply, every failure answered in the door's shape. Embeddings are never streamed."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from starlette.types import Receive, Scope, Send

from proxy.asgi import BodyLimits, ClientGone, note_headers, send_bytes, trace_of
from proxy.door import Headers, as_fluido, send_failure
from proxy.errors import FluidoError
from proxy.types import JSON, EmbeddingRequest, Trace, Usage
from proxy.upstream.router import Router

S = TypeVar("S")  # what a door keeps of one request for its reply


def prompt_tokens(result: JSON) -> int | None:
    """The prompt tokens an OpenAI-shaped embeddings reply reports, if it does."""
    usage = result.get("usage") if isinstance(result, dict) else None
    if isinstance(usage, dict) and isinstance(tokens := usage.get("prompt_tokens"), int):
        return tokens
    return None


class EmbedDoor(Protocol[S]):
    """What an embeddings route does its own way."""

    json_headers: Headers

    def decode(self, body: bytes, trace: Trace) -> tuple[EmbeddingRequest | None, S]:
        """The request (its model noted on ``trace``) and what its reply needs; no request: nothing to
        embed, and ``encode`` gets no result."""
        ...

    def encode(self, result: JSON, tokens: int | None, state: S, trace: Trace) -> bytes:
        """The reply to the upstream's OpenAI-shaped ``result``; raises ``UpstreamError`` if it is not one."""
        ...

    def error_body(self, error: FluidoError) -> bytes: ...


class EmbedRoute(Generic[S]):
    """An embeddings route: routed like chat, never streamed."""

    def __init__(self, door: EmbedDoor[S], router: Router, limits: BodyLimits) -> None:
        self.door = door
        self.router = router
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        door = self.door
        try:
            req, state = door.decode(await self.limits.read(scope, receive), trace)
            result: JSON = None
            tokens = None
            if req is not None:
                result = await self.router.embed(req, trace)
                tokens = prompt_tokens(result)
            body = door.encode(result, tokens, state, trace)
        except ClientGone:
            return
        except Exception as exc:
            await send_failure(send, trace, as_fluido(exc, "request_failed", "to handle the request"), door)
            return
        if tokens is not None:
            trace.usage = Usage(tokens, 0)
        await send_bytes(send, 200, body, [*door.json_headers, *note_headers(trace)])
