"""uvicorn's httptools protocol with a deadline on request headers.

uvicorn bounds only the idle time between requests on a kept-alive connection, and any byte received resets
that timer: a client that sends its request line and then one header byte every few seconds (slowloris)
holds a connection, and the memory behind it, for as long as it likes. Here every request must have sent
all its headers within ``server.header_timeout`` seconds of its first byte (or, on a new connection, of
connecting); otherwise it gets a 408 and the connection is closed. Bodies have their own deadline,
``server.body_timeout``, enforced where they are read (``proxy.asgi.BodyLimits.read``).

The timeout reaches the protocol through the lifespan state (``HEADER_TIMEOUT_STATE``), which uvicorn hands
to every connection; without it (another server, a test harness) the deadline is off.

Every response's status line and headers also leave in the same write as its first body bytes
(``HeldHead``): uvicorn writes them apart, and every write is a system call. And a request learns that its
client left from a ``Departure`` in its scope, called when the connection is lost, instead of from a task
of its own waiting on ``receive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.departure import DEPARTURE, Departure
from proxy.errors import RequestTimeout

HEADER_TIMEOUT_STATE = "fluido.header_timeout"
_BODY = orjson.dumps(RequestTimeout("The request headers did not arrive in time.").body())
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class HeldHead:
    """The transport as one response sees it: its head (status line and headers) waits for the first body
    write and leaves with it, one system call instead of two.

    The head never waits past the current turn of the event loop, so a response whose body comes later (or
    never: a reply to HEAD) still has its head sent at once. After the head, the response writes to the
    transport itself again. A ``100 Continue`` (written before the response starts) is not held.
    """

    __slots__ = ("_cycle", "_head", "_loop", "_transport")

    def __init__(
        self, cycle: RequestResponseCycle, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._cycle = cycle
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if not self._cycle.response_started:  # a 100 Continue
            self._transport.write(data)
        elif self._head is None:
            self._head = data
            self._loop.call_soon(self._flush, b"")
        else:
            self._flush(data)

    def _flush(self, data: bytes) -> None:
        if self._cycle.transport is self:  # type: ignore[comparison-overlap]
            self._cycle.transport = self._transport
            parts: tuple[bytes, ...] = (self._head or b"", data)  # one write: the body is not copied
        elif data:
            parts = (data,)
        else:
            return  # the loop's call, after the head left with the body
        if not self._transport.is_closing():
            self._transport.writelines(parts)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush(b"")
        self._transport.close()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers take longer than the configured timeout; sends each
    response's head with its first body bytes; tells each request's ``Departure`` when its client left."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        timeout = self.app_state.get(HEADER_TIMEOUT_STATE)
        self._header_timeout: float | None = float(timeout) if timeout else None
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timeout is not None and self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:  # the client left before its response was complete
            departure = cycle.scope.get(DEPARTURE)
            if isinstance(departure, Departure):
                departure.leave()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # not on an upgrade, which starts no cycle
            cycle.transport = HeldHead(cycle, self.transport, self.loop)  # type: ignore[assignment]
            cycle.scope[DEPARTURE] = Departure()  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        # Between requests the keep-alive timer takes over until the next request's first byte.
        self._disarm()
        super().on_response_complete()
