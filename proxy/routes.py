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
    ClientGone,
    DisconnectWatch,
    client_address,
    encode_headers,
    read_body,
    request_id,
    send_bytes,
    send_error,
)
from proxy.config import Config
from proxy.errors import FluidoError, UpstreamError
from proxy.parsing import parse_chat, parse_embedding
from proxy.router import Router
from proxy.types import Call, Completion, Handler, Stream
from proxy.writer import DONE, SSEWriter, completion_json, error_frame

log = structlog.get_logger("fluido.routes")
SSE_HEADERS = encode_headers(
    [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
)


class InternalError(FluidoError):
    """A bug in Fluido; the details go to the log, not to the client."""


def note_headers(call: Call) -> list[tuple[bytes, bytes]]:
    pairs = [("x-request-id", call.request_id)]
    pairs += [(f"x-fluido-{key.replace('_', '-')}", value) for key, value in call.notes.items()]
    return encode_headers(pairs)


class ChatCompletions:
    """POST /v1/chat/completions, as a plain ASGI app: it owns the commit point and the disconnect watch."""

    def __init__(self, chain: Handler, max_body_bytes: int) -> None:
        self.chain = chain
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            call = Call(rid, client_address(scope), parse_chat(body), time.monotonic())
        except ClientGone:
            return
        except FluidoError as exc:
            await send_error(send, exc, encode_headers([("x-request-id", rid)]))
            return
        watch = DisconnectWatch(receive)
        try:
            reply = await self.chain(call)
            if isinstance(reply, Completion):
                body = completion_json(
                    reply, id=f"chatcmpl-{rid}", created=int(time.time()), model=call.request.model
                )
                watch.finished = True
                await send_bytes(send, 200, body, [JSON_TYPE, *note_headers(call)])
            else:
                await self._stream(call, reply, send, watch)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            call.notes["client_gone"] = "1"
        except FluidoError as exc:
            watch.finished = True
            await send_error(send, exc, note_headers(call))
        except Exception:
            log.exception("request_failed", request_id=rid)
            watch.finished = True
            await send_error(send, InternalError("Fluido failed to handle the request."), note_headers(call))
        finally:
            watch.close()

    async def _stream(self, call: Call, stream: Stream, send: Send, watch: DisconnectWatch) -> None:
        async with aclosing(stream):
            # The commit point: until the first chunk is here, any failure is still an ordinary HTTP error.
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                raise UpstreamError("The upstream sent an empty stream.") from None
            req = call.request
            writer = SSEWriter(
                id=f"chatcmpl-{call.request_id}", created=int(time.time()), model=req.model,
                include_usage=req.include_usage,
            )  # fmt: skip
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *note_headers(call)]}
            )
            try:
                for frame in writer.frames(first):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                async for chunk in stream:
                    for frame in writer.frames(chunk):
                        await send({"type": "http.response.body", "body": frame, "more_body": True})
                last = DONE
            except FluidoError as exc:
                call.notes["error"] = exc.type
                last = error_frame(exc)
            except Exception:
                log.exception("stream_failed", request_id=call.request_id)
                last = error_frame(InternalError("Fluido failed while streaming the reply."))
            watch.finished = True
            await send({"type": "http.response.body", "body": last, "more_body": False})


class Embeddings:
    """POST /v1/embeddings: routed like chat, never streamed."""

    def __init__(self, router: Router, max_body_bytes: int) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        notes: dict[str, str] = {}
        try:
            req = parse_embedding(await read_body(scope, receive, self.max_body_bytes))
            result = await self.router.embed(req, notes)
        except ClientGone:
            return
        except FluidoError as exc:
            await send_error(send, exc, encode_headers([("x-request-id", rid)]))
            return
        headers = encode_headers([("x-request-id", rid), *((f"x-fluido-{k}", v) for k, v in notes.items())])
        await send_bytes(send, 200, orjson.dumps(result), [JSON_TYPE, *headers])


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
