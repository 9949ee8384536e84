"""A share of a load cell's arrivals sent from a process of its own, to time shed answers honestly.

The load generator's event loop also reads every admitted stream; when it is busy, an answer that has
arrived waits for the loop before its time is taken, so its shed latencies include the generator's own
lag. This process sends a share of the cell's arrivals, or all of them (the rest come from the generator,
so the total rate is the cell's), and does nothing else.

It takes its times per answer on one clock (CLOCK_REALTIME, nanoseconds), from the kernel's transmit stamp
of its request (SO_TIMESTAMPING, software: loopback stamps a segment as its sender's write hands it to the
device, so the stamp is in the socket's error queue when the write returns, and is read from there at once):
  arrive: when the answer's last byte reached this process's socket, the kernel's receive timestamp of
          the segment that carried it (SO_TIMESTAMPNS; for TCP, recvmsg reports the stamp of the last
          segment it read). Loopback stamps a segment as it is queued for receiving, in the sender's
          system call, so this time does not wait for this process to get a core or its loop to wake
          (a segment that comes after the answer but before its read, a closing server's FIN, may
          pass on its own stamp: a later time, never an earlier one).
  e2e:    when this process's parser saw the answer's end: the arrival plus this process's own wait for
          its core and its loop.
  write:  from this process's clock read just before the write to the request's transmit stamp: its own
          system call, and any wait for its core in between (not Fluido's time, hence not in the above).
The error queue is always emptied before the loop polls again: its readiness (POLLERR) would make uvloop
close its watcher of the socket. Where no transmit stamp comes (a write the kernel split), both times are
taken from the clock read before the write, which can only make them longer.

Its client is a bare HTTP/1.1 one (httptools' parser on keep-alive, non-blocking sockets read with recvmsg
for the timestamp), so the time it takes is the answer's, not a client library's: aiohttp's request
machinery alone is a few hundred microseconds of CPU on each side of the exchange. Admitted requests are read
to their end like any other. It prints one JSON line per request (with Fluido's own time to the headers, its
Server-Timing ``proxy;dur``, as ``server_ms``; ``arrive`` is null where the kernel gives no timestamp), and
its own loop's lag (how late a 5 ms timer fires, p99) at the end.

``python -m bench.buffer.shedprobe --url URL --rate R --seconds S --seed N``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

from bench.buffer.probe import proxy_ms
from bench.buffer.scenarios import bodies
from bench.load.schedule import arrivals
from bench.load.stats import percentile

TICK = 0.005
GIVE_UP = 20.0  # seconds, as the load generator's client
# Linux's SO_TIMESTAMPNS and SO_TIMESTAMPING (also the types of their control messages: a struct timespec
# of CLOCK_REALTIME; three of them, the first the software stamp), which Python's socket module does not
# name, and SO_TIMESTAMPING's flags: software transmit stamps, reported, without a copy of the data.
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
TRANSMIT_STAMPS = (1 << 1) | (1 << 4) | (1 << 11)  # TX_SOFTWARE | SOFTWARE | OPT_TSONLY
TIMESPEC = struct.Struct("qq")
# A read's control messages: its SCM_TIMESTAMPNS, and the (empty) SCM_TIMESTAMPING a socket that asked
# for transmit stamps also gets; an error-queue message's: the stamps and the extended error (a few more).
STAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size) + socket.CMSG_SPACE(3 * TIMESPEC.size)
ERROR_QUEUE_SPACE = 512
READ_SIZE = 65536


def received_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time of a read's last segment, from recvmsg's control messages."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def transmitted_ns(sock: socket.socket) -> int | None:
    """The kernel's transmit time of the latest write's last byte, from the socket's error queue, which
    this empties (no message waits there for the event loop to see)."""
    stamp = None
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(0, ERROR_QUEUE_SPACE, socket.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return stamp
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= TIMESPEC.size:
                seconds, nanoseconds = TIMESPEC.unpack_from(data)
                stamp = int(seconds) * 1_000_000_000 + int(nanoseconds)


def keep_stamps_on(within: float = 5.0) -> socket.socket:
    """A loopback connection's reading end that wants receive stamps, once the kernel stamps segments.

    The kernel stamps arriving segments only while some socket wants stamps, and when the first one asks
    it turns stamping on later, from a work queue: segments that arrive before carry no stamp (an answer
    then has no arrival time rather than a wrong one). This socket, kept open, keeps stamping on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        reader = socket.create_connection(listener.getsockname())
        reader.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        writer, _ = listener.accept()
    with writer:
        until = time.monotonic() + within
        while time.monotonic() < until:
            writer.send(b"x")
            _, ancillary, _, _ = reader.recvmsg(1, STAMP_SPACE)
            if received_ns(ancillary) is not None:
                break
            time.sleep(0.001)  # the core to the kernel's work queue, before the next try
    return reader


class Exchange:
    """One keep-alive connection; one request at a time on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[tuple[int | None, int]] | None = None
        self.reusable = True
        self.closed = False
        self.body = bytearray()  # an error answer's, for its code (a stream's text is not kept)
        self.server_timing: str | None = None
        self.arrived_ns: int | None = None  # the kernel's receive time of the latest read's last segment

    @classmethod
    async def open(cls, host: str, port: int) -> Exchange:
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            # Asked before any byte arrives: the kernel stamps a segment on arrival only while a socket
            # wants stamps.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TRANSMIT_STAMPS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports do
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        exchange = cls(sock)
        loop.add_reader(sock.fileno(), exchange.readable)
        return exchange

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close()
            self._end(exc)
            return
        if not data:
            self.close()
            self._end(ConnectionResetError("closed before the answer ended"))
            return
        self.arrived_ns = received_ns(ancillary)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def close(self) -> None:
        self.reusable = False
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.server_timing = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        if self.parser.get_status_code() != 200:
            self.body += chunk

    def on_message_complete(self) -> None:
        read_ns = time.time_ns()
        self.reusable = self.reusable and self.parser.should_keep_alive()
        if self.done is not None and not self.done.done():
            self.done.set_result((self.arrived_ns, read_ns))

    def _end(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    async def send(self, request: bytes) -> tuple[int, int, int | None, int | None, int]:
        """(status, the clock read before the write, the request's transmit stamp, the answer's last
        byte's arrival at the socket, the time this process read it), in time.time_ns()'s nanoseconds;
        a stamp the kernel does not give is None."""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.body.clear()
        self.server_timing = None
        sent_ns = time.time_ns()
        try:
            written = self.sock.send(request)
        except BlockingIOError:
            written = 0
        left_ns = transmitted_ns(self.sock)
        if written < len(request):  # not for a request this small on an idle connection, but kept right
            # The rest would be stamped while the loop polls: no more transmit stamps on this socket.
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
            transmitted_ns(self.sock)
            left_ns = None
            await loop.sock_sendall(self.sock, request[written:])
        arrived_ns, read_ns = await self.done
        return self.parser.get_status_code(), sent_ns, left_ns, arrived_ns, read_ns


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[Exchange] = []

    def close(self) -> None:
        for exchange in self.idle:
            exchange.close()
        self.idle.clear()

    def request(self, body: bytes) -> bytes:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body

    async def post(self, body: bytes) -> dict[str, object]:
        exchange = None
        while self.idle and exchange is None:
            exchange = self.idle.pop()
            if not exchange.reusable:  # the server closed it while it was idle (its keep-alive timeout)
                exchange = None
        try:
            if exchange is None:
                exchange = await Exchange.open(self.host, self.port)
            async with asyncio.timeout(GIVE_UP):
                status, sent_ns, left_ns, arrived_ns, read_ns = await exchange.send(self.request(body))
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            if exchange is not None:
                exchange.close()
            return {"status": 0, "code": type(exc).__name__, "e2e": None, "arrive": None, "write": None}
        if exchange.reusable:
            self.idle.append(exchange)
        else:
            exchange.close()
        code, server_ms = code_of(status, bytes(exchange.body)), proxy_ms(exchange.server_timing)
        start_ns = sent_ns if left_ns is None else left_ns
        arrive = None if arrived_ns is None else (arrived_ns - start_ns) / 1e9
        write = None if left_ns is None else (left_ns - sent_ns) / 1e9
        return {"status": status, "code": code, "e2e": (read_ns - start_ns) / 1e9, "arrive": arrive,
                "write": write, "server_ms": server_ms}  # fmt: skip


def code_of(status: int, body: bytes) -> str:
    if status == 200:
        return ""
    error = orjson.loads(body).get("error", {}) if body.startswith(b"{") else {}
    return str(error.get("code") or error.get("type") or f"http_{status}")


async def lag(stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(TICK)
        samples.append(time.perf_counter() - t0 - TICK)


async def run(url: str, rate: float, seconds: float, seed: int) -> None:
    stamps = keep_stamps_on()
    stop, lags = asyncio.Event(), list[float]()
    ticker = asyncio.create_task(lag(stop, lags))
    client, load = Client(url), bodies(seed=seed + 100)
    t0, tasks = time.perf_counter(), []
    for i, at in enumerate(arrivals(rate, seed, duration=seconds)):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.post(load[i % len(load)][1])))
    results = await asyncio.gather(*tasks)
    client.close()
    stamps.close()
    stop.set()
    await ticker
    for result in results:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.write(orjson.dumps({"lag_p99": percentile(lags, 99)}).decode() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer.shedprobe", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    uvloop.run(run(args.url, args.rate, args.seconds, args.seed))


if __name__ == "__main__":
    main()
