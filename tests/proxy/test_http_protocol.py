"""The HTTP protocol sends each response's head in the same write as its first body bytes, never later than
the current turn of the event loop, and tells a request's ``Departure`` when its client leaves mid-response.
What a write is cannot be seen from a socket's reader (the kernel may join or split segments), so the
protocol writes here to a transport that records each write call."""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from proxy.departure import DEPARTURE, Departure
from proxy.http_protocol import HeaderDeadlineProtocol, QuickHeadCycle
from tests.support.wait import until


class RecordingTransport:
    """What the protocol needs of a transport; every write (a ``writelines`` is one) is kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """``/now``: head and body in one step; ``/later``: the body only once ``go`` is set; ``/stream``: three
    body parts in one step; ``/echo``: the request body, read first (a client may wait for 100 Continue)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        path = scope["path"]
        body = b"hello"
        if path == "/echo":
            body = (await receive())["body"]
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        if path == "/later":
            await self.go.wait()
        parts = [b"a", b"b", b"c"] if path == "/stream" else [body]
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


def serve(app: App) -> tuple[HeaderDeadlineProtocol, RecordingTransport]:
    config = Config(app, lifespan="off", log_level="warning")
    protocol = HeaderDeadlineProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def responses(writes: list[bytes]) -> list[tuple[int, bytes]]:
    """(status, body) of each response in the bytes written, to check they are still well formed HTTP."""
    out: list[tuple[int, bytes]] = []

    class Reader:
        body = b""

        def on_body(self, data: bytes) -> None:
            self.body += data

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.body))
            self.body = b""

    reader = Reader()
    parser = httptools.HttpResponseParser(reader)
    parser.feed_data(b"".join(writes))
    return out


def request(path: str, method: str = "GET", extra: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: test\r\n".encode() + extra + b"\r\n"


async def test_the_head_leaves_in_the_same_write_as_the_body() -> None:
    protocol, transport = serve(App())
    protocol.data_received(request("/now"))
    await until(lambda: protocol.cycle.response_complete)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert responses(transport.writes) == [(200, b"hello")]


async def test_a_stream_s_head_leaves_with_its_first_part_and_the_rest_as_sent() -> None:
    protocol, transport = serve(App())
    protocol.data_received(request("/stream"))
    await until(lambda: protocol.cycle.response_complete)
    assert len(transport.writes) == 3  # head + "a", "b", "c" + the end of the chunked body
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(
        b"1\r\na\r\n"
    )
    assert responses(transport.writes) == [(200, b"abc")]


async def test_a_head_whose_body_is_late_leaves_alone_at_once() -> None:
    app = App()
    protocol, transport = serve(app)
    protocol.data_received(request("/later"))
    await until(lambda: len(transport.writes) == 1)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(
        b"\r\n\r\n"
    )
    app.go.set()
    await until(lambda: protocol.cycle.response_complete)
    assert len(transport.writes) == 2
    assert responses(transport.writes) == [(200, b"hello")]


async def test_a_reply_to_head_which_has_no_body_still_sends_its_head() -> None:
    protocol, transport = serve(App())
    protocol.data_received(request("/now", method="HEAD"))
    await until(lambda: len(transport.writes) == 1)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(
        b"\r\n\r\n"
    )


async def test_100_continue_is_not_held_back_and_comes_before_the_head() -> None:
    protocol, transport = serve(App())
    protocol.data_received(request("/echo", "POST", b"content-length: 4\r\nexpect: 100-continue\r\n"))
    await until(lambda: len(transport.writes) == 1)
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    protocol.data_received(b"ping")
    await until(lambda: protocol.cycle.response_complete)
    assert len(transport.writes) == 2
    assert responses(transport.writes[1:]) == [(200, b"ping")]


async def test_keep_alive_requests_each_get_their_head_with_their_body() -> None:
    protocol, transport = serve(App())
    for n in range(1, 4):
        protocol.data_received(request("/now"))
        await until(lambda n=n: len(transport.writes) == n and protocol.cycle.response_complete)  # type: ignore[misc]
    assert responses(transport.writes) == [(200, b"hello")] * 3


def departure_of(protocol: HeaderDeadlineProtocol) -> tuple[Departure, list[str]]:
    departure = protocol.cycle.scope[DEPARTURE]  # type: ignore[literal-required]
    assert isinstance(departure, Departure)
    told: list[str] = []
    departure.on_leave(lambda: told.append("left"))
    return departure, told


async def test_a_client_leaving_mid_response_is_announced_once() -> None:
    app = App()
    protocol, transport = serve(app)
    protocol.data_received(request("/later"))
    await until(lambda: len(transport.writes) == 1)  # the head went, the body waits
    departure, told = departure_of(protocol)
    protocol.connection_lost(None)
    assert told == ["left"] and departure.left
    app.go.set()
    await until(lambda: protocol.cycle.response_complete or protocol.cycle.disconnected)
    assert told == ["left"]


async def test_a_client_leaving_after_its_response_announces_nothing() -> None:
    protocol, _ = serve(App())
    protocol.data_received(request("/now"))
    await until(lambda: protocol.cycle.response_complete)
    departure, told = departure_of(protocol)
    protocol.connection_lost(None)
    assert told == [] and not departure.left


class _Flow:
    write_paused = False


def _cycle(cls: type, method: str = "GET", keep_alive: bool = True) -> tuple[Any, RecordingTransport]:
    transport = RecordingTransport()
    cycle = cls(
        scope={"method": method, "headers": []}, transport=transport, flow=_Flow(), logger=None,
        access_logger=None, access_log=False, default_headers=[(b"server", b"uvicorn")],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
        on_response=lambda: None,
    )  # fmt: skip
    return cycle, transport


HEADS = [  # (status, method, keep-alive, headers)
    (200, "GET", True, [(b"content-type", b"application/json"), (b"content-length", b"2")]),
    (200, "GET", True, [(b"Content-Type", b"text/event-stream"), (b"X-Fluido-Cache", b"miss\tx")]),
    (200, "POST", True, [(b"transfer-encoding", b"Chunked"), (b"content-length", b"5")]),
    (200, "GET", True, [(b"content-length", b"3"), (b"content-length", b"4"), (b"connection", b"keep-alive")]),
    (503, "GET", True, [(b"connection", b"Upgrade, Close"), (b"content-length", b"0")]),
    (200, "GET", False, [(b"content-length", b"1")]),
    (204, "GET", True, []),
    (200, "HEAD", True, [(b"x-a", b"")]),
]  # fmt: skip


async def test_the_quick_head_writes_uvicorn_s_bytes_and_keeps_its_state() -> None:
    for status, method, keep_alive, headers in HEADS:
        message = {"type": "http.response.start", "status": status, "headers": headers}
        outcomes = []
        for cls in (RequestResponseCycle, QuickHeadCycle):
            cycle, transport = _cycle(cls, method, keep_alive)
            await cycle.send(dict(message))
            state = (cycle.response_started, cycle.chunked_encoding, cycle.expected_content_length)
            outcomes.append((transport.writes, state, cycle.keep_alive))
        assert outcomes[0] == outcomes[1], (status, method, headers)
        assert outcomes[1][0][0].startswith(b"HTTP/1.1 %d " % status)


async def test_the_quick_head_refuses_what_uvicorn_refuses() -> None:
    good = [(b"content-type", b"text/plain"), (b"content-length", b"0")]
    bad_names = [b"x a", b"x:a", b"x\r\nb", b"(x)", b"x\x00"]
    bad_values = [b"a\r\nset-cookie: b", b"a\nb", b"a\x00", b"a\x7f", b"a\x1fb"]
    cases = [[*good, (name, b"v")] for name in bad_names] + [[(b"x-a", value), *good] for value in bad_values]
    for headers in cases:
        for cls in (RequestResponseCycle, QuickHeadCycle):
            cycle, transport = _cycle(cls)
            try:
                await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
            except RuntimeError as exc:
                assert "Invalid HTTP header" in str(exc)
            else:
                raise AssertionError(f"{cls.__name__} accepted {headers}")
            assert transport.writes == []
    # The control: a tab in a value, and every visible character, pass both.
    for cls in (RequestResponseCycle, QuickHeadCycle):
        cycle, transport = _cycle(cls)
        value = bytes(range(0x20, 0x7F)) + b"\t"
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [*good, (b"x-v", value)]})
        assert len(transport.writes) == 1


async def test_every_request_s_cycle_sends_its_head_the_quick_way() -> None:
    protocol, transport = serve(App())
    protocol.data_received(request("/now"))
    await until(lambda: len(transport.writes) == 1)
    assert isinstance(protocol.cycle, QuickHeadCycle)
    assert responses(transport.writes) == [(200, b"hello")]
