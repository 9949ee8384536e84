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
(``HeldHead``): uvicorn writes them apart, and every write is a system call. The head itself is built by
``QuickHeadCycle``: the same bytes and checks as uvicorn's, each check run once over all the headers
rather than once per header. And a request learns that its client left from a ``Departure`` in its scope,
called when the connection is lost, instead of from a task of its own waiting on ``receive``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

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


class _Sent:
    """What ``QuickHeadCycle.send`` returns for a head it wrote at once: an awaitable already done."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_SENT = _Sent()
# The header names uvicorn's head acts on; no other name changes anything but the bytes written.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class QuickHeadCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, with the response head built in fewer steps.

    uvicorn searches every header's name and value with a regular expression of its own, two searches per
    header and some twenty headers per reply. Here each search runs once, over all the names joined and
    over all the values joined by a tab (a character values may hold): one finds a forbidden character
    exactly when some header holds one, and the same ``RuntimeError`` follows. The bytes written are
    uvicorn's. Everything else (the body, a paused transport, an access log) is uvicorn's own ``send``.

    ``send`` is a plain method returning an awaitable, so a body part costs no extra coroutine.
    """

    def send(self, message: Any) -> Awaitable[None]:  # type: ignore[override]
        if (
            not self.response_started
            and message["type"] == "http.response.start"
            and not self.flow.write_paused
            and not self.disconnected
            and not self.access_log
        ):
            self._send_head(message)
            return _SENT
        return RequestResponseCycle.send(self, message)

    def _send_head(self, message: Any) -> None:
        # uvicorn's head (RequestResponseCycle.send, for 'http.response.start'), with the checks joined.
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        headers = self.default_headers + list(message.get("headers", []))
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"\t".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING:
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
                elif name == b"connection":
                    connection = [token.lower().strip() for token in value.split(b",")]
                    if b"close" in connection:
                        self.keep_alive = False
                        has_connection_close = True
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


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
            # The cycle's task has not run yet: the app will be handed the quicker ``send``.
            cycle.__class__ = QuickHeadCycle
            cycle.transport = HeldHead(cycle, self.transport, self.loop)  # type: ignore[assignment]
            cycle.scope[DEPARTURE] = Departure()  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        # Between requests the keep-alive timer takes over until the next request's first byte.
        self._disarm()
        super().on_response_complete()
