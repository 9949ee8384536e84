"""``POST /api/embed`` and the older ``/api/embeddings``, routed like ``/v1/embeddings``."""

from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.ollama_api.decode import EmbedRequest, parse_embed
from proxy.ollama_api.errors import error_body as ollama_error_body
from proxy.types import JSON, EmbeddingRequest, Trace

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

    json_headers = JSON_HEADERS
    error_body = staticmethod(ollama_error_body)

    def __init__(self, aliases: Container[str], *, legacy: bool) -> None:
        self.aliases = aliases
        self.legacy = legacy

    def decode(self, body: bytes, trace: Trace) -> tuple[EmbeddingRequest | None, EmbedRequest]:
        door = parse_embed(body, self.aliases, self.legacy)
        trace.model = door.alias
        return door.request, door

    def encode(self, result: JSON, tokens: int | None, state: EmbedRequest, trace: Trace) -> bytes:
        vectors = vectors_of(result) if state.request is not None else []
        reply: dict[str, Any]
        if self.legacy:
            reply = {"embedding": vectors[0] if vectors else []}
        else:
            reply = {"model": state.name, "embeddings": vectors}
            reply["total_duration"] = round((time.monotonic() - trace.started) * 1e9)
            if tokens is not None:
                reply["prompt_eval_count"] = tokens
        return orjson.dumps(reply)
