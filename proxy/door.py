"""The request handling every door shares: read, decode, run the chain (or the router), reply.

A door (OpenAI's ``/v1``, Ollama's ``/api``) differs only in how it decodes a body and how it writes its
replies and errors. ``ChatRoute`` (and ``proxy.embed_door.EmbedRoute``, for embeddings) own everything
else, once: the bounded body read, the trace, the commit point of a stream, the disconnect watch, and the
rule that every failure is answered in the door's shape (never a plain-text 500).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Generic, Protocol, TypeVar

import orjson
import structlog
from starlette.types import Receive, Scope, Send

from proxy.asgi import (
    BodyLimits,
    ClientGone,
    failed,
    header,
    note_headers,
    send_bytes,
    send_error,
    trace_of,
)
from proxy.departure import DEPARTURE, WATCH_DELAY_SECONDS, DisconnectWatch
from proxy.errors import FluidoError, UpstreamError
from proxy.relay import after_wait
from proxy.tap import Tapped
from proxy.types import (
    Call,
    ChatRequest,
    Chunk,
    Completion,
    Handler,
    Message,
    Stream,
    Trace,
)

log = structlog.get_logger("fluido.routes")
Headers = list[tuple[bytes, bytes]]
S = TypeVar("S")  # what a door keeps of one request for its reply (Ollama: the model's name as sent)


class InternalError(FluidoError):
    """A bug in Fluido; the details go to the log, not to the client."""


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def prompt_text(req: ChatRequest) -> str:
    def text(m: Message) -> str:
        return m.content if isinstance(m.content, str) else orjson.dumps(m.content).decode()

    return "\n".join(f"{m.role}: {text(m)}" for m in req.messages)


class StreamWriter(Protocol):
    """Renders one stream's chunks in a door's framing."""

    def render(self, chunk: Chunk) -> bytes: ...

    def done(self) -> bytes:
        """The last frames of a stream the upstream finished (may raise a ``FluidoError``)."""
        ...


class ChatDoor(Protocol[S]):
    """What a chat route does its own way."""

    json_headers: Headers  # of a whole reply
    stream_headers: Headers

    def decode(self, body: bytes, trace: Trace) -> tuple[ChatRequest | None, S]:
        """The request (its model noted on ``trace``) and what its reply needs; no request: ``answer``."""
        ...

    async def answer(self, state: S, trace: Trace) -> bytes:
        """The whole reply to a request with nothing to generate (Ollama's load and unload requests)."""
        ...

    def whole(self, call: Call, state: S, reply: Completion) -> bytes: ...

    def writer(self, call: Call, state: S) -> StreamWriter: ...

    def error_body(self, error: FluidoError) -> bytes: ...

    def error_frame(self, error: FluidoError) -> bytes:
        """The last frame of a stream that failed after its first chunk went out."""
        ...


def as_fluido(exc: Exception, event: str, doing: str) -> FluidoError:
    """``exc`` if it is one of Fluido's errors; otherwise a bug: logged with its traceback as ``event``, and
    told to the client only as "Fluido failed ``doing``"."""
    if isinstance(exc, FluidoError):
        return exc
    log.exception(event)
    return InternalError(f"Fluido failed {doing}.")


class ErrorShape(Protocol):
    """What every door has: its error body (OpenAI's ``{"error": {...}}``, Ollama's ``{"error": "..."}``)."""

    def error_body(self, error: FluidoError) -> bytes: ...


async def send_failure(send: Send, trace: Trace, error: FluidoError, door: ErrorShape) -> None:
    """An error as the whole reply, in the door's shape, with the headers the trace carries."""
    await send_error(send, failed(trace, error), note_headers(trace), door.error_body)


class ChatRoute(Generic[S]):
    """A chat route, as a plain ASGI app: it owns the commit point and the disconnect watch."""

    def __init__(self, door: ChatDoor[S], chain: Handler, limits: BodyLimits, content_chars: int = 0) -> None:
        self.door = door
        self.chain = chain
        self.limits = limits
        self.content_chars = content_chars  # > 0: keep this much prompt and completion text for the log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        door = self.door
        try:
            req, state = door.decode(await self.limits.read(scope, receive), trace)
            answer = None if req is not None else await door.answer(state, trace)
        except ClientGone:
            return
        except Exception as exc:
            # A bug in validation too is answered in the door's shape, never as a plain-text 500.
            await self._fail(send, trace, exc, "request_parsing_failed", "to read the request")
            return
        if req is None:
            await send_bytes(send, 200, answer or b"", [*door.json_headers, *note_headers(trace)])
            return
        trace.stream = req.stream
        if (control := header(scope, b"cache-control")) is not None:
            trace.cache_control = control.decode("latin-1").lower()
        if self.content_chars:
            trace.prompt = clip(prompt_text(req), self.content_chars)
        call = Call(req, trace)
        watch = DisconnectWatch(receive, 0.0 if req.stream else WATCH_DELAY_SECONDS, scope.get(DEPARTURE))
        try:
            reply = await self.chain(call)
            if isinstance(reply, Completion):
                trace.usage = reply.usage
                if self.content_chars:
                    trace.completion = clip(str(reply.choices[0].message.content or ""), self.content_chars)
                body = door.whole(call, state, reply)
                watch.finished = True
                await send_bytes(send, 200, body, [*door.json_headers, *note_headers(trace)])
            else:
                await self._stream(call, state, reply, send, watch)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            trace.notes["client_gone"] = "1"
        except Exception as exc:
            watch.finished = True
            await self._fail(send, trace, exc, "request_failed", "to handle the request")
        finally:
            watch.close()

    async def _fail(self, send: Send, trace: Trace, exc: Exception, event: str, doing: str) -> None:
        """``exc`` as the whole reply. Not kept in a local of ``__call__``: its traceback holds that frame,
        and the cycle would keep the whole request alive until a garbage collection (whose pauses other
        requests then wait for; a shed request at overload is the common case)."""
        await send_failure(send, trace, as_fluido(exc, event, doing), self.door)

    async def _stream(self, call: Call, state: S, stream: Stream, send: Send, watch: DisconnectWatch) -> None:
        trace, door = call.trace, self.door
        text: list[str] | None = [] if self.content_chars else None
        async with aclosing(stream):
            # The commit point: until the first chunk is here, any failure is still an ordinary HTTP error.
            try:
                chunk = await anext(stream)  # a Tapped stream's observers see it, or its end, on this path
            except StopAsyncIteration:
                raise UpstreamError("The upstream ended the stream before the reply was complete.") from None
            writer = door.writer(call, state)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*door.stream_headers, *note_headers(trace)],
                }
            )
            # Every write is a system call. Frames with nothing for the reader to show (the role, usage)
            # wait for the next one that has, or for the end. Frames with output leave as soon as the
            # stream has to wait for more: at once, unless more chunks are already at hand (several events
            # in one read from the upstream), which then leave with them, in one write. An upstream that
            # stalls after its finish holds back nothing already here.
            held: list[bytes] = []
            shown = False  # held has frames with output

            async def flush() -> None:
                nonlocal shown
                body = b"".join(held)
                held.clear()
                shown = False
                await send({"type": "http.response.body", "body": body, "more_body": True})

            render = writer.render
            # Middleware that only watches the stream tapped it (proxy.tap): its source is read here and its
            # observers called from this loop, so a chunk crosses no generator of theirs.
            tapped = stream if isinstance(stream, Tapped) else None
            source, taps = (tapped.source, tapped.chunk_taps) if tapped is not None else (stream, ())
            try:
                while True:
                    if chunk.usage is not None:
                        trace.usage = chunk.usage
                    if text is not None and chunk.content:
                        text.append(chunk.content)
                    held.append(render(chunk))
                    shown = shown or chunk.carries_output
                    if not shown:
                        chunk = await anext(source)
                    else:  # proxy.relay.next_chunk, with its usual case (the chunk is at hand) written out
                        step = source.__anext__()
                        try:
                            signal = step.send(None)
                        except StopIteration as done:
                            chunk = done.value
                        else:
                            chunk = await after_wait(step, signal, flush)
                    for observe in taps:
                        observe(chunk)
            except StopAsyncIteration:
                last = await _ended(tapped, door, trace) if tapped is not None else None
                if last is None:
                    try:
                        last = writer.done()
                    except FluidoError as exc:
                        last = door.error_frame(failed(trace, exc))
            except Exception as exc:
                # Never a "done" frame after a failure. The error is kept in no local (see ``_fail``).
                last = await _broken(tapped, door, trace, exc)
            finally:
                if text is not None:
                    trace.completion = clip("".join(text), self.content_chars)
            watch.finished = True
            held.append(last)
            await send({"type": "http.response.body", "body": b"".join(held), "more_body": False})


STREAM_FAILED = ("stream_failed", "while streaming the reply")  # the event and what failed, for as_fluido


async def _ended(tapped: Tapped, door: ChatDoor[S], trace: Trace) -> bytes | None:
    """A tapped stream's source ran to its end: its observers' ``on_end``; the error frame if one failed."""
    try:
        await tapped.end(True)
    except Exception as exc:
        return door.error_frame(failed(trace, as_fluido(exc, *STREAM_FAILED)))
    return None


async def _broken(tapped: Tapped | None, door: ChatDoor[S], trace: Trace, exc: Exception) -> bytes:
    """The stream failed with ``exc``: a tapped stream's observers' ``on_end`` (not finished), then the one
    error frame; an observer that fails too replaces ``exc``, as a generator's failing ``finally`` would."""
    if tapped is not None:
        try:
            await tapped.end(False)
        except Exception as late:
            return door.error_frame(failed(trace, as_fluido(late, *STREAM_FAILED)))
    return door.error_frame(failed(trace, as_fluido(exc, *STREAM_FAILED)))
