"""Shared plumbing for the fake upstreams: lifecycle, stream faults, helpers."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web

_S = TypeVar("_S", bound="FakeServer")
Handler = Callable[[_S, web.Request], Awaitable[web.StreamResponse]]

_POLL_S = 0.01  # how often a sleeping handler looks for a vanished client
_RESPONSE = web.RequestKey("fake_response", web.StreamResponse)


def split_pieces(text: str) -> list[str]:
    """Word pieces carrying their leading whitespace (" world"), as tokenizers
    emit them, so that "".join(pieces) == text exactly."""
    return re.findall(r"\s*\S+|\s+$", text)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_words(messages: Any) -> int:
    """Prompt "tokens": whitespace words over all message contents, at least 1."""
    if not isinstance(messages, list):
        return 1
    words = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    return max(words, 1)


def fake_embedding(text: str, dims: int = 8) -> list[float]:
    """Deterministic unit vector derived from the text (both upstreams normalise)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:dims]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def counts_disconnects(handler: Handler[_S]) -> Handler[_S]:
    """Count a client that vanished mid-response; aiohttp does not cancel
    handlers on disconnect, so it shows up as a failed write or a closed transport."""

    @functools.wraps(handler)
    async def wrapper(self: _S, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except ConnectionResetError:
            self.disconnects += 1
            sent = request.get(_RESPONSE)  # an empty StreamResponse is falsy: compare to None
            return sent if sent is not None else web.Response(status=499)
        except asyncio.CancelledError:
            if client_gone(request):
                self.disconnects += 1
            raise

    return wrapper


class FakeServer:
    """Base of the fakes. Common switches (plain attributes, set between requests):

    models: list[str]            served model names
    reply: str                   text the model answers; streamed word by word
    delay_first: float           seconds before the first byte (status line included)
    gate: threading.Event | None when an Event, chat and embed calls with messages or input wait,
                                 once recorded, until it is set: a request held in flight for exactly as
                                 long as a test needs (Ollama's empty preload is not held)
    delay_between: float         seconds between streamed pieces
    fail_status: int | None      answer every chat/embed call with this status and
                                 the upstream's own error body
    drop_after: int | None       stream: after N pieces close the TCP connection with
                                 no final line / terminating chunk (non-stream: no answer)
    malformed_after: int | None  stream: after N pieces send one non-JSON line, go on
    error_after: int | None      stream: after N pieces send the upstream's in-band
                                 error and end (non-stream: HTTP 500)
    end_after: int | None        stream: after N pieces end the response cleanly but
                                 unfinished: vLLM sends [DONE] with no finish_reason (as
                                 llama-cpp-python does when another request interrupts a
                                 stream), Ollama closes with no done:true line
    tool_calls: list[dict] | None  reply is a tool call: [{"name", "arguments": dict}]
    split_writes: bool           write each frame in 1-3 byte pieces (partial-line decoders)
    requests: list[dict]         JSON bodies received on chat/embed endpoints, in order
    hits: list[str]              every request received, any path, as "METHOD /path", in order
                                 (health and model-list probes included)
    headers: list[dict]          request headers of those same calls
    disconnects: int             clients that went away before their response finished
    url: str                     "http://127.0.0.1:PORT" once started
    """

    # aiohttp leaves a handler running when its client leaves; a fake that must notice at once while
    # idle (a request queued for a slot) sets this and gets CancelledError instead.
    handler_cancellation = False

    def __init__(self, models: list[str], reply: str) -> None:
        self.models = list(models)
        self.reply = reply
        self.delay_first = 0.0
        self.gate: threading.Event | None = None
        self.delay_between = 0.0
        self.fail_status: int | None = None
        self.drop_after: int | None = None
        self.malformed_after: int | None = None
        self.error_after: int | None = None
        self.end_after: int | None = None
        self.tool_calls: list[dict[str, Any]] | None = None
        self.split_writes = False
        self.requests: list[dict[str, Any]] = []
        self.hits: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------
    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        app = web.Application(middlewares=[self._hit])
        app.add_routes(self._routes())
        # Short shutdown: a test that leaves a slow stream open must not stall teardown.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=self.handler_cancellation
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self: _S) -> _S:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        """Serve from a background thread with its own loop (for sync tests)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)

    def stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    # -- request helpers -------------------------------------------------
    @web.middleware
    async def _hit(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Recorded before the handler runs, whatever the path: a probe that 404s still touched us.
        self.hits.append(f"{request.method} {request.path}")
        return await handler(request)

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.requests.append(body)
        self.headers.append(dict(request.headers))

    async def _first_byte(self, request: web.Request, body: dict[str, Any]) -> None:
        """What comes before the first byte of an answer: the gate, then ``delay_first``."""
        gate = self.gate
        if gate is not None and (body.get("messages") or body.get("input")):
            while not gate.is_set():
                await self._sleep(request, _POLL_S)  # notices a vanished client meanwhile
        await self._sleep(request, self.delay_first)

    async def _sleep(self, request: web.Request, seconds: float) -> None:
        """Sleep, but notice a vanished client promptly instead of at the next write."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            if client_gone(request):
                raise ConnectionResetError("client went away")
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _POLL_S))

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        if not self.split_writes:
            await resp.write(data)
            return
        i, size = 0, 1
        while i < len(data):
            await resp.write(data[i : i + size])
            await asyncio.sleep(0.001)  # separate TCP segments, not one coalesced write
            i += size
            size = size % 3 + 1

    def _drop(self, request: web.Request) -> None:
        # close(), not abort(): bytes already written still arrive, then EOF lands
        # inside the chunked body, which clients report as an incomplete payload.
        if request.transport is not None:
            request.transport.close()

    async def _stream(
        self,
        request: web.Request,
        *,
        content_type: str,
        head: list[bytes],
        pieces: list[bytes],
        tail: Callable[[], list[bytes]],
        error: list[bytes],
        malformed: bytes,
        cut: Sequence[bytes] = (),
    ) -> web.StreamResponse:
        """Send head, pieces (with the fault switches applied), then tail(); ``cut`` ends an unfinished
        stream (end_after)."""
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        request[_RESPONSE] = resp
        await resp.prepare(request)
        for frame in head:
            await self._write(resp, frame)
        for i in range(len(pieces) + 1):
            if i == self.drop_after:
                self._drop(request)
                return resp
            if i == self.malformed_after:
                await self._write(resp, malformed)
            if i == self.end_after:
                for frame in cut:
                    await self._write(resp, frame)
                await resp.write_eof()
                return resp
            if i == self.error_after:
                for frame in error:
                    await self._write(resp, frame)
                await resp.write_eof()
                return resp
            if i == len(pieces):
                break
            if i and self.delay_between:
                await self._sleep(request, self.delay_between)
            await self._write(resp, pieces[i])
        for frame in tail():
            await self._write(resp, frame)
        await resp.write_eof()
        return resp
