"""``POST /api/embed`` and the older ``/api/embeddings``, routed like ``/v1/embeddings``."""

from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.asgi import ClientGone, failed, note_headers, read_body, send_bytes, trace_of
from proxy.errors import FluidoError, UpstreamError
from proxy.ollama_api.decode import parse_embed
from proxy.ollama_api.errors import send_ollama_error
from proxy.types import JSON, Usage
from proxy.upstream.router import Router

JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


def vectors_of(result: JSON) -> list[list[float]]:
    """The vectors of an OpenAI-shaped embeddings reply, in input order."""
    data = result.get("data") if isinstance(result, dict) else None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UpstreamError("The upstream's embedding reply is malformed.")
    ordered = sorted(data, key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in ordered]
    if not all(isinstance(v, list) for v in vectors):
        raise UpstreamError("The upstream's embedding reply is malformed.")
    return vectors


class OllamaEmbed:
    """``/api/embed`` (``legacy=False``: ``input`` -> ``embeddings``) or ``/api/embeddings`` (``prompt`` ->
    ``embedding``)."""

    def __init__(self, router: Router, aliases: Container[str], max_body_bytes: int, *, legacy: bool) -> None:
        self.router = router
        self.aliases = aliases
        self.max_body_bytes = max_body_bytes
        self.legacy = legacy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            door = parse_embed(body, self.aliases, self.legacy)
            trace.model = door.alias
            vectors: list[list[float]] = []
            tokens: int | None = None
            if door.request is not None:
                result = await self.router.embed(door.request, trace)
                vectors = vectors_of(result)
                usage = result.get("usage")
                if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                    tokens = usage["prompt_tokens"]
                    trace.usage = Usage(tokens, 0)
        except ClientGone:
            return
        except FluidoError as exc:
            await send_ollama_error(send, failed(trace, exc), note_headers(trace))
            return
        reply: dict[str, Any]
        if self.legacy:
            reply = {"embedding": vectors[0] if vectors else []}
        else:
            reply = {"model": door.name, "embeddings": vectors}
            reply["total_duration"] = round((time.monotonic() - trace.started) * 1e9)
            if tokens is not None:
                reply["prompt_eval_count"] = tokens
        await send_bytes(send, 200, orjson.dumps(reply), [*JSON_HEADERS, *note_headers(trace)])
