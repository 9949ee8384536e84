"""Small ASGI helpers for the hot endpoints: bounded body reads, sending replies. Watching for a client
that leaves is in ``departure.py``."""

from __future__ import annotations

import functools
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.deadline import Deadline
from proxy.errors import BodyTooLarge, FluidoError, RequestTimeout, UnsupportedEncoding, render
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


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How big a request body may be and how long it may take to arrive (``server.max_body_bytes`` and
    ``server.body_timeout``): one value, so a route that reads a body cannot apply one and not the other."""

    max_bytes: int
    timeout: float | None  # seconds; None: no deadline

    async def read(self, scope: Scope, receive: Receive) -> bytes:
        """The whole request body, at most ``max_bytes`` bytes, arrived within ``timeout`` seconds."""
        encoding = header(scope, b"content-encoding")
        if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
            raise UnsupportedEncoding(
                "Compressed request bodies are not accepted; send the JSON uncompressed."
            )
        limit = self.max_bytes
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        try:
            with Deadline(self.timeout):
                return await _receive_body(receive, limit)
        except TimeoutError:
            # A client trickling its body holds a connection and a buffer: cut it off, and say so.
            message = f"The request body did not arrive within {self.timeout:g} seconds."
            raise RequestTimeout(message) from None


async def _receive_body(receive: Receive, limit: int) -> bytes:
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


# What may appear in a response header: a token for the name; visible ASCII and spaces for the value.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]")
MAX_HEADER_VALUE = 256


def header_value(value: str) -> bytes:
    """A header value made safe whatever it holds: control characters (CR and LF above all, which would
    split the header) and non-ASCII replaced, a long value cut. Clean short values take the quick path."""
    if len(value) <= MAX_HEADER_VALUE and value.isascii() and value.isprintable():
        return value.encode("ascii")
    return _HEADER_UNSAFE.sub("?", value[:MAX_HEADER_VALUE]).encode("ascii")


@functools.lru_cache(maxsize=256)
def _header_name(name: str) -> bytes | None:
    # Header names come from Fluido's own code: a small, bounded set, checked and encoded once each.
    return name.encode("ascii") if _HEADER_NAME.fullmatch(name) else None


def encode_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Response headers with safe values (``header_value``); a name that is not a token is dropped."""
    return [(raw, header_value(value)) for name, value in pairs if (raw := _header_name(name)) is not None]


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    error: FluidoError,
    headers: list[tuple[bytes, bytes]],
    body: Callable[[FluidoError], bytes] = render,
) -> None:
    """``error`` as the whole reply, in OpenAI's shape unless ``body`` renders another (Ollama's)."""
    extra = encode_headers(error.headers().items())
    await send_bytes(send, error.status, body(error), [JSON_TYPE, *headers, *extra])


@functools.lru_cache(maxsize=256)
def _note_header(key: str) -> bytes:
    # Note names come from Fluido's own code (and adapters' fixed meta keys): a small, bounded set.
    return f"x-fluido-{key.replace('_', '-')}".encode("latin-1")


def note_headers(trace: Trace) -> list[tuple[bytes, bytes]]:
    headers = encode_headers([("x-request-id", trace.request_id), *trace.headers.items()])
    headers += [(_note_header(k), header_value(v)) for k, v in trace.notes.items()]
    return headers


def failed(trace: Trace, error: FluidoError) -> FluidoError:
    trace.error_type, trace.error_code = error.type, error.code or ""
    return error


class HotPath:
    """Sends the busiest endpoints straight to their handler; everything else to ``app``."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (handler := self.routes.get((scope["method"], scope["path"]))):
            await handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class App(Starlette):
    """Starlette, with the busiest endpoints behind the app's own middleware only.

    Starlette's routing, exception and server-error layers each wrap ``send``, and a stream calls it once
    per chunk. The hot endpoints catch their own errors and answer them in OpenAI's shape, so those layers
    have nothing to add there: the hot endpoints get the user middleware (observability, authentication)
    and nothing else. They keep their routes, so everything else about them (405s, listings) is unchanged.
    """

    def __init__(self, *, hot_routes: Mapping[tuple[str, str], ASGIApp], **kwargs: Any) -> None:
        self.hot_routes = hot_routes
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        hot = {}
        for route, handler in self.hot_routes.items():
            for cls, args, kwargs in reversed(self.user_middleware):
                handler = cls(handler, *args, **kwargs)
            hot[route] = handler
        return HotPath(super().build_middleware_stack(), hot)
