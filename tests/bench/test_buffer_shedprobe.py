"""The shed probe's client on real loopback sockets: an answer's arrival is the kernel's receive timestamp,
taken when the answer's bytes reach the socket, apart from when the probe's thread gets to read them; its
request's start is the kernel's transmit stamp, apart from when the probe read its clock before the write.

The positive controls hold the probe's thread: while the answer is written (the time the probe read the
answer grows by the hold, the kernel's arrival time stays within the server's write), and between its
clock read and its write (the wait shows before the transmit stamp, not in the answer's time)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import uvloop

from bench.buffer import shedprobe
from bench.buffer.shedprobe import (
    SO_TIMESTAMPING,
    SO_TIMESTAMPNS,
    STAMP_SPACE,
    TRANSMIT_STAMPS,
    Client,
    Exchange,
    keep_stamps_on,
    received_ns,
    transmitted_ns,
)

HOLD = 0.05  # seconds the probe's thread is held after the answer was written
BODY = b'{"error":{"message":"busy","type":"rate_limit_error","code":"deadline_unreachable"}}'
ANSWER = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"server-timing: proxy;dur=0.40\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


@dataclass
class Shedder:
    """Answers every request with a 429 from a thread of its own. Before each answer it calls ``before``
    with the request and waits until ``go`` is set; it notes the time (CLOCK_REALTIME, as the kernel's
    stamps) just before and just after the answer's write."""

    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    before: Callable[[], object] = lambda: None
    go: threading.Event = field(default_factory=threading.Event)
    wrote: threading.Event = field(default_factory=threading.Event)
    writes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while True:
                got = b""
                while not got.endswith(b"{}"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    got += chunk
                self.before()
                assert self.go.wait(5), "the probe's side never said go"
                start = time.time_ns()
                conn.sendall(ANSWER)
                self.writes.append((start, time.time_ns()))
                self.wrote.set()


@pytest.fixture(autouse=True)
def stamping() -> Iterator[None]:
    """The kernel's receive stamping turned on before a test's segments (it turns on late otherwise)."""
    with keep_stamps_on():
        yield


@pytest.fixture
def shedder() -> Iterator[Shedder]:
    server = Shedder()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.go.set()
    server.listener.close()


def hold_the_probe(server: Shedder, loop: asyncio.AbstractEventLoop) -> None:
    """Once the request is in, the probe's loop thread is taken up: the answer is written while it is
    held, and the thread stays held ``HOLD`` past the write, as when the probe waits for a core."""

    def held() -> None:
        server.go.set()
        assert server.wrote.wait(5), "the answer was never written"
        time.sleep(HOLD)  # deliberately holding the reader: the delay under test

    server.before = lambda: loop.call_soon_threadsafe(held)


def test_the_arrival_is_the_kernels_stamp_of_the_write_not_the_late_read(shedder: Shedder) -> None:
    async def exchange() -> tuple[int, int, int | None, int | None, int]:
        hold_the_probe(shedder, asyncio.get_running_loop())
        port = int(shedder.url.rsplit(":", 1)[1])
        conn = await Exchange.open("127.0.0.1", port)
        try:
            return await conn.send(REQUEST)
        finally:
            conn.close()

    status, sent_ns, left_ns, arrived_ns, read_ns = uvloop.run(exchange())
    [(write_start, write_end)] = shedder.writes
    assert status == 429
    assert left_ns is not None and sent_ns <= left_ns <= write_start, "stamped as the request left"
    assert arrived_ns is not None, "the kernel stamped the answer's segment"
    # Loopback stamps a segment as it is queued for the receiver, inside the sender's write.
    assert sent_ns <= write_start <= arrived_ns <= write_end
    # Positive control: the read came only after the hold; the arrival did not move with it.
    assert read_ns - write_end >= HOLD * 1e9
    assert read_ns - arrived_ns >= HOLD * 1e9


def test_the_probes_figures_are_the_arrival_and_the_read_from_the_send(shedder: Shedder) -> None:
    async def post() -> dict[str, object]:
        hold_the_probe(shedder, asyncio.get_running_loop())
        client = Client(shedder.url)
        try:
            return await client.post(b"{}")
        finally:
            client.close()

    result = uvloop.run(post())
    assert len(shedder.writes) == 1
    assert result["status"] == 429 and result["code"] == "deadline_unreachable"
    assert result["server_ms"] == 0.4
    arrive, e2e = result["arrive"], result["e2e"]
    assert isinstance(arrive, float) and isinstance(e2e, float)
    assert e2e - arrive >= HOLD, "the read waited for the held thread, the arrival did not"
    assert 0 < arrive <= e2e


def test_a_socket_that_asked_for_no_stamp_gives_none_and_one_that_did_gives_its_arrival() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stamped, plain = socket.socket(), socket.socket()
        stamped.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with stamped, plain:
            received = {}
            for name, client in (("stamped", stamped), ("plain", plain)):
                client.connect(listener.getsockname())
                server, _ = listener.accept()
                with server:  # open until the read: a FIN coalesced with the byte would carry its own stamp
                    before = time.time_ns()
                    server.sendall(b"x")
                    after = time.time_ns()
                    _, ancillary, _, _ = client.recvmsg(16, STAMP_SPACE)
                received[name] = (before, received_ns(ancillary), after)
    before, stamp, after = received["stamped"]
    assert stamp is not None and before <= stamp <= after
    assert received["plain"][1] is None


def test_a_wait_between_the_probes_clock_read_and_its_write_is_not_in_the_answers_time(
    shedder: Shedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def post() -> dict[str, object]:
        shedder.go.set()  # answered at once
        client = Client(shedder.url)
        try:
            return await client.post(b"{}")
        finally:
            client.close()

    # The probe's module reads the clock through ``time``: its first read, before the write, is held; its
    # read of the answer (on_message_complete) is not.
    reads: list[int] = []

    def probe_clock() -> int:
        reads.append(time.time_ns())
        if len(reads) == 1:
            time.sleep(HOLD)  # deliberately holding the probe after its clock read: the delay under test
        return reads[-1]

    monkeypatch.setattr(shedprobe, "time", type("Clock", (), {"time_ns": staticmethod(probe_clock)}))
    result = uvloop.run(post())
    write, arrive = result["write"], result["arrive"]
    assert isinstance(write, float) and isinstance(arrive, float)
    assert write >= HOLD, "the hold came before the request left"
    assert arrive < HOLD, "the answer's time starts when the request left, not at the clock read"


def test_a_transmit_stamp_comes_only_to_a_socket_that_asked_and_empties_its_error_queue() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stamped, plain = socket.socket(), socket.socket()
        stamped.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TRANSMIT_STAMPS)
        with stamped, plain:
            sent = {}
            for name, client in (("stamped", stamped), ("plain", plain)):
                client.connect(listener.getsockname())
                server, _ = listener.accept()
                with server:
                    client.setblocking(False)
                    before = time.time_ns()
                    client.send(b"x")
                    after = time.time_ns()
                    sent[name] = (before, transmitted_ns(client), after, transmitted_ns(client))
    before, stamp, after, again = sent["stamped"]
    assert stamp is not None and before <= stamp <= after
    assert again is None, "the first read emptied the error queue"
    assert sent["plain"][1] is None
