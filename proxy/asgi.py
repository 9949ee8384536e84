"""Small ASGI helpers for the hot endpoints: bounded body reads, disconnect watching, sending replies."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import BodyTooLarge, FluidoError, render
from proxy.types import Trace

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
JSON_TYPE = (b"content-type", b"application/json")
TRACE_KEY = "fluido.trace"


class ClientGone(Exception):
    """The client disconnected before its request was answered."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


# Fresh ids: a random prefix per process and a counter, unique without a system call per request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it is sane, so its logs and ours line up; else a fresh one."""
    raw = header(scope, b"x-request-id")
    if raw is not None:
        value = raw.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(value):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def trace_of(scope: Scope) -> Trace:
    """The request's trace: made by whichever layer asks first, shared through the scope after that."""
    trace: Trace | None = scope.get(TRACE_KEY)
    if trace is None:
        trace = scope[TRACE_KEY] = Trace(
            request_id(scope), client_address(scope), scope["path"], time.monotonic()
        )
    return trace


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


class DisconnectWatch:
    """Cancels the request's task the moment its client disconnects, so the upstream call stops too.

    Start it once the body is read: from then on the only message ``receive`` can deliver is the
    disconnect. Mark it ``finished`` before the last send, so a disconnect after that cancels nothing.
    """

    __slots__ = ("_task", "_watcher", "finished", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self.finished = False
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finished and self._task is not None:
            self.gone = True
            self._task.cancel()

    def absorb(self) -> bool:
        """In an ``except CancelledError``: True (and the cancellation undone) when the client left."""
        if self.gone and self._task is not None:
            self._task.uncancel()
        return self.gone

    def close(self) -> None:
        self.finished = True
        self._watcher.cancel()


def encode_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", errors="replace")) for k, v in pairs]


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: FluidoError, headers: list[tuple[bytes, bytes]]) -> None:
    extra = encode_headers(error.headers().items())
    await send_bytes(send, error.status, render(error), [JSON_TYPE, *headers, *extra])


def note_headers(trace: Trace) -> list[tuple[bytes, bytes]]:
    pairs = [("x-request-id", trace.request_id), *trace.headers.items()]
    pairs += [(f"x-fluido-{key.replace('_', '-')}", value) for key, value in trace.notes.items()]
    return encode_headers(pairs)


def failed(trace: Trace, error: FluidoError) -> FluidoError:
    trace.error_type, trace.error_code = error.type, error.code or ""
    return error


class HotPath:
    """Sends the busiest endpoints straight to their handler, past Starlette's routing and exception layers.

    Those layers wrap ``send`` too, and a stream calls it once per chunk. The endpoints keep their routes,
    so everything else about them (405s, listings) is unchanged.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (handler := self.routes.get((scope["method"], scope["path"]))):
            await handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)
