"""``POST /api/chat`` and ``/api/generate``: Ollama's bodies through the chain ``/v1/chat/completions`` uses.

Only the decoding of the request and the encoding of the reply differ from the OpenAI door: the ``Call``,
the chain (limits, classifier, cache, ...), the router, the commit point, the disconnect watch and the trace
(whose ``route`` names the door in the access log and the metrics) are the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container
from contextlib import aclosing
from dataclasses import replace

import structlog
from starlette.types import Receive, Scope, Send

from proxy.asgi import (
    ClientGone,
    DisconnectWatch,
    encode_headers,
    failed,
    header,
    note_headers,
    read_body,
    send_bytes,
    trace_of,
)
from proxy.errors import FluidoError, InvalidRequest, UpstreamError
from proxy.ollama_api.decode import DoorRequest
from proxy.ollama_api.encode import OllamaEncoder, loaded
from proxy.ollama_api.errors import error_line, send_ollama_error
from proxy.routes import InternalError, clip, prompt_text
from proxy.types import Call, Completion, Handler, Stream
from proxy.upstream.router import Router
from proxy.upstream.warmup import Preloadable

log = structlog.get_logger("fluido.ollama")
JSON_HEADERS = encode_headers([("content-type", "application/json; charset=utf-8")])
NDJSON_HEADERS = encode_headers([("content-type", "application/x-ndjson"), ("x-accel-buffering", "no")])
Decoder = Callable[[bytes, Container[str]], DoorRequest]


class OllamaGenerate:
    """One of Ollama's generating routes, as a plain ASGI app: ``decode`` tells chat from generate."""

    def __init__(
        self,
        chain: Handler,
        router: Router,
        decode: Decoder,
        *,
        generate: bool,
        max_body_bytes: int,
        content_chars: int = 0,
    ) -> None:
        self.chain = chain
        self.router = router
        self.aliases = router.models
        self.decode = decode
        self.generate = generate
        self.max_body_bytes = max_body_bytes
        self.content_chars = content_chars  # > 0: keep this much prompt and completion text for the log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        try:
            door = self.decode(await read_body(scope, receive, self.max_body_bytes), self.aliases)
        except ClientGone:
            return
        except FluidoError as exc:
            await send_ollama_error(send, failed(trace, exc), note_headers(trace))
            return
        trace.model = door.alias
        req = door.request
        if req is None:
            try:
                await self._load(door)
            except FluidoError as exc:
                await send_ollama_error(send, failed(trace, exc), note_headers(trace))
                return
            body = loaded(door.name, generate=self.generate, unload=door.unload)
            await send_bytes(send, 200, body, [*JSON_HEADERS, *note_headers(trace)])
            return
        trace.stream = req.stream
        if (control := header(scope, b"cache-control")) is not None:
            trace.cache_control = control.decode("latin-1").lower()
        if self.content_chars:
            trace.prompt = clip(prompt_text(req), self.content_chars)
        call = Call(req, trace)
        encoder = OllamaEncoder(door.name, generate=self.generate, started=trace.started)
        watch = DisconnectWatch(receive)
        try:
            reply = await self.chain(call)
            if isinstance(reply, Completion):
                trace.usage = reply.usage
                body = encoder.completion(reply, time.monotonic())
                if self.content_chars:
                    trace.completion = clip(str(reply.choices[0].message.content or ""), self.content_chars)
                watch.finished = True
                await send_bytes(send, 200, body, [*JSON_HEADERS, *note_headers(trace)])
            else:
                await self._stream(call, reply, encoder, send, watch)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            trace.notes["client_gone"] = "1"
        except FluidoError as exc:
            watch.finished = True
            await send_ollama_error(send, failed(trace, exc), note_headers(trace))
        except Exception:
            log.exception("request_failed")
            watch.finished = True
            error = failed(trace, InternalError("Fluido failed to handle the request."))
            await send_ollama_error(send, error, note_headers(trace))
        finally:
            watch.close()

    async def _load(self, door: DoorRequest) -> None:
        """A request with nothing to generate loads (or unloads) the alias's first model on its server."""
        target = self.router.targets(door.alias)[0]
        adapter = self.router.upstreams[target.upstream].adapter
        if isinstance(adapter, Preloadable):
            keep_alive = 0 if door.unload else door.keep_alive
            await adapter.preload(
                replace(target, keep_alive=keep_alive if keep_alive is not None else target.keep_alive)
            )
        elif door.unload:
            raise InvalidRequest(
                f"The model '{door.name}' is served by an upstream that keeps its models loaded; it "
                "cannot be unloaded through Fluido.",
                param="keep_alive",
            )
        # Other servers (vLLM, llama.cpp) keep their model loaded: it is there already.

    async def _stream(
        self, call: Call, stream: Stream, encoder: OllamaEncoder, send: Send, watch: DisconnectWatch
    ) -> None:
        trace = call.trace
        text: list[str] | None = [] if self.content_chars else None
        async with aclosing(stream):
            # The commit point: until the first chunk is here, any failure is still an ordinary HTTP error.
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                raise UpstreamError("The upstream sent an empty stream.") from None
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [*NDJSON_HEADERS, *note_headers(trace)]})
            try:
                while True:
                    if chunk.usage is not None:
                        trace.usage = chunk.usage
                    if text is not None and chunk.content:
                        text.append(chunk.content)
                    if lines := encoder.render(chunk, time.monotonic()):
                        await send({"type": "http.response.body", "body": lines, "more_body": True})
                    chunk = await anext(stream)
            except StopAsyncIteration:
                try:
                    last = encoder.done(time.monotonic())
                except FluidoError as exc:
                    last = error_line(failed(trace, exc))
            except FluidoError as exc:
                last = error_line(failed(trace, exc))  # never a done line after a failure
            except Exception:
                log.exception("stream_failed")
                last = error_line(failed(trace, InternalError("Fluido failed while streaming the reply.")))
            finally:
                if text is not None:
                    trace.completion = clip("".join(text), self.content_chars)
            watch.finished = True
            await send({"type": "http.response.body", "body": last, "more_body": False})
