"""Route handlers: parse, build the call, run the chain, render. Nothing else happens here."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.asgi import (
    JSON_TYPE,
    WATCH_DELAY_SECONDS,
    ClientGone,
    DisconnectWatch,
    encode_headers,
    failed,
    header,
    note_headers,
    read_body,
    send_bytes,
    send_error,
    trace_of,
)
from proxy.config import Config
from proxy.errors import FluidoError, UpstreamError
from proxy.parsing import parse_chat, parse_embedding
from proxy.types import Call, ChatRequest, Completion, Handler, Message, Stream, Usage
from proxy.upstream.router import Router
from proxy.writer import DONE, SSEWriter, completion_json, error_frame

log = structlog.get_logger("fluido.routes")
SSE_HEADERS = encode_headers(
    [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
)


class InternalError(FluidoError):
    """A bug in Fluido; the details go to the log, not to the client."""


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def prompt_text(req: ChatRequest) -> str:
    def text(m: Message) -> str:
        return m.content if isinstance(m.content, str) else orjson.dumps(m.content).decode()

    return "\n".join(f"{m.role}: {text(m)}" for m in req.messages)


class ChatCompletions:
    """POST /v1/chat/completions, as a plain ASGI app: it owns the commit point and the disconnect watch."""

    def __init__(
        self, chain: Handler, max_body_bytes: int, content_chars: int = 0, body_timeout: float | None = None
    ) -> None:
        self.chain = chain
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.content_chars = content_chars  # > 0: keep this much prompt and completion text for the log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        try:
            req = parse_chat(await read_body(scope, receive, self.max_body_bytes, self.body_timeout))
        except ClientGone:
            return
        except FluidoError as exc:
            await send_error(send, failed(trace, exc), note_headers(trace))
            return
        except Exception:
            # A bug in validation: still an OpenAI-shaped reply, never a plain-text 500.
            log.exception("request_parsing_failed")
            error = failed(trace, InternalError("Fluido failed to read the request."))
            await send_error(send, error, note_headers(trace))
            return
        trace.model, trace.stream = req.model, req.stream
        if (control := header(scope, b"cache-control")) is not None:
            trace.cache_control = control.decode("latin-1").lower()
        if self.content_chars:
            trace.prompt = clip(prompt_text(req), self.content_chars)
        call = Call(req, trace)
        watch = DisconnectWatch(receive, 0.0 if req.stream else WATCH_DELAY_SECONDS)
        try:
            reply = await self.chain(call)
            if isinstance(reply, Completion):
                trace.usage = reply.usage
                if self.content_chars:
                    trace.completion = clip(str(reply.choices[0].message.content or ""), self.content_chars)
                body = completion_json(
                    reply,
                    id=f"chatcmpl-{trace.request_id}",
                    created=int(time.time()),
                    model=call.request.model,
                )
                watch.finished = True
                await send_bytes(send, 200, body, [JSON_TYPE, *note_headers(trace)])
            else:
                await self._stream(call, reply, send, watch)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            trace.notes["client_gone"] = "1"
        except FluidoError as exc:
            watch.finished = True
            await send_error(send, failed(trace, exc), note_headers(trace))
        except Exception:
            log.exception("request_failed")
            watch.finished = True
            error = failed(trace, InternalError("Fluido failed to handle the request."))
            await send_error(send, error, note_headers(trace))
        finally:
            watch.close()

    async def _stream(self, call: Call, stream: Stream, send: Send, watch: DisconnectWatch) -> None:
        trace, req = call.trace, call.request
        text: list[str] | None = [] if self.content_chars else None
        async with aclosing(stream):
            # The commit point: until the first chunk is here, any failure is still an ordinary HTTP error.
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                raise UpstreamError("The upstream ended the stream before the reply was complete.") from None
            writer = SSEWriter(
                id=f"chatcmpl-{trace.request_id}", created=int(time.time()), model=req.model,
                include_usage=req.include_usage,
            )  # fmt: skip
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*SSE_HEADERS, *note_headers(trace)],
                }
            )
            chunk = first
            try:
                while True:
                    if chunk.usage is not None:
                        trace.usage = chunk.usage
                    if text is not None and chunk.content:
                        text.append(chunk.content)
                    if frame := writer.render(chunk):
                        await send({"type": "http.response.body", "body": frame, "more_body": True})
                    chunk = await anext(stream)
            except StopAsyncIteration:
                last = DONE
            except FluidoError as exc:
                last = error_frame(failed(trace, exc))
            except Exception:
                log.exception("stream_failed")
                last = error_frame(failed(trace, InternalError("Fluido failed while streaming the reply.")))
            finally:
                if text is not None:
                    trace.completion = clip("".join(text), self.content_chars)
            watch.finished = True
            await send({"type": "http.response.body", "body": last, "more_body": False})


class Embeddings:
    """POST /v1/embeddings: routed like chat, never streamed."""

    def __init__(self, router: Router, max_body_bytes: int, body_timeout: float | None = None) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        try:
            req = parse_embedding(await read_body(scope, receive, self.max_body_bytes, self.body_timeout))
            trace.model = req.model
            result = await self.router.embed(req, trace)
        except ClientGone:
            return
        except FluidoError as exc:
            await send_error(send, failed(trace, exc), note_headers(trace))
            return
        except Exception:
            log.exception("request_failed")
            error = failed(trace, InternalError("Fluido failed to handle the request."))
            await send_error(send, error, note_headers(trace))
            return
        if not isinstance(result, dict):
            error = failed(trace, UpstreamError("The upstream's embedding reply is not a JSON object."))
            await send_error(send, error, note_headers(trace))
            return
        if isinstance(usage := result.get("usage"), dict) and isinstance(usage.get("prompt_tokens"), int):
            trace.usage = Usage(usage["prompt_tokens"], 0)
        await send_bytes(send, 200, orjson.dumps(result), [JSON_TYPE, *note_headers(trace)])


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
