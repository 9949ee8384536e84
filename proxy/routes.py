"""OpenAI's door: ``/v1/chat/completions`` and ``/v1/embeddings`` read and written in OpenAI's shapes, over
the handling every door shares (``proxy.door``); and the small routes beside them."""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.asgi import JSON_TYPE, encode_headers, send_bytes
from proxy.config import Config
from proxy.errors import UpstreamError, render
from proxy.parsing import parse_chat, parse_embedding
from proxy.types import JSON, Call, ChatRequest, Completion, EmbeddingRequest, Trace
from proxy.writer import SSEWriter, completion_json
from proxy.writer import error_frame as sse_error_frame

SSE_HEADERS = encode_headers(
    [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
)


class OpenAIChat:
    """``POST /v1/chat/completions``: a completion object, or SSE chunks ending with ``[DONE]``."""

    json_headers = [JSON_TYPE]
    stream_headers = SSE_HEADERS
    error_body = staticmethod(render)
    error_frame = staticmethod(sse_error_frame)

    def decode(self, body: bytes, trace: Trace) -> tuple[ChatRequest, None]:
        req = parse_chat(body)
        trace.model = req.model
        return req, None

    async def answer(self, state: None, trace: Trace) -> bytes:
        raise AssertionError("every OpenAI chat request has messages")  # decode never returns None

    def whole(self, call: Call, state: None, reply: Completion) -> bytes:
        return completion_json(
            reply, id=f"chatcmpl-{call.trace.request_id}", created=int(time.time()), model=call.request.model
        )

    def writer(self, call: Call, state: None) -> SSEWriter:
        req = call.request
        return SSEWriter(
            id=f"chatcmpl-{call.trace.request_id}", created=int(time.time()), model=req.model,
            include_usage=req.include_usage,
        )  # fmt: skip


class OpenAIEmbeddings:
    """``POST /v1/embeddings``: the upstream's reply as it came, once it is a JSON object."""

    json_headers = [JSON_TYPE]
    error_body = staticmethod(render)

    def decode(self, body: bytes, trace: Trace) -> tuple[EmbeddingRequest, None]:
        req = parse_embedding(body)
        trace.model = req.model
        return req, None

    def encode(self, result: JSON, tokens: int | None, state: None, trace: Trace) -> bytes:
        if not isinstance(result, dict):
            raise UpstreamError("The upstream's embedding reply is not a JSON object.")
        return orjson.dumps(result)


class Models:
    """GET /v1/models: the configured aliases, which is all a client may ask for."""

    def __init__(self, cfg: Config) -> None:
        created = int(time.time())
        data = [
            {"id": alias, "object": "model", "created": created, "owned_by": "fluido"} for alias in cfg.models
        ]
        self.body = orjson.dumps({"object": "list", "data": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, self.body, [JSON_TYPE])


async def health(request: Request) -> Response:
    """GET /health: liveness only; never touches a dependency."""
    return Response(b'{"status":"ok"}', media_type="application/json")
