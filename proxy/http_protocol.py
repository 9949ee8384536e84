"""uvicorn's httptools protocol with a deadline on request headers.

uvicorn bounds only the idle time between requests on a kept-alive connection, and any byte received resets
that timer: a client that sends its request line and then one header byte every few seconds (slowloris)
holds a connection, and the memory behind it, for as long as it likes. Here every request must have sent
all its headers within ``server.header_timeout`` seconds of its first byte (or, on a new connection, of
connecting); otherwise it gets a 408 and the connection is closed. Bodies have their own deadline,
``server.body_timeout``, enforced where they are read (``proxy.asgi.BodyLimits.read``).

The timeout reaches the protocol through the lifespan state (``HEADER_TIMEOUT_STATE``), which uvicorn hands
to every connection; without it (another server, a test harness) the protocol behaves as uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import RequestTimeout

HEADER_TIMEOUT_STATE = "fluido.header_timeout"
_BODY = orjson.dumps(RequestTimeout("The request headers did not arrive in time.").body())
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers take longer than the configured timeout."""

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
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Between requests the keep-alive timer takes over until the next request's first byte.
        self._disarm()
        super().on_response_complete()
