"""A share of a load cell's arrivals sent from a process of its own, to time shed answers honestly.

The load generator's event loop also reads every admitted stream; when it is busy, an answer that has
arrived waits for the loop before its time is taken, so its shed latencies include the generator's own
lag. This process sends a thin Poisson share of the cell's arrivals (the rest come from the generator,
so the total rate is the cell's) and does nothing else: its loop is idle when an answer arrives.

Its client is a bare HTTP/1.1 one (httptools' parser on keep-alive connections), so the time it takes is
the answer's, not a client library's: aiohttp's request machinery alone is a few hundred microseconds of
CPU on each side of the exchange. An answer's time runs from just before its request is written to the
parser's end of the message. Admitted requests are read to their end like any other. It prints one JSON
line per request (with Fluido's own time to the headers, its Server-Timing ``proxy;dur``, as ``server_ms``),
and its own loop's lag (how late a 5 ms timer fires, p99) at the end.

``python -m bench.buffer.shedprobe --url URL --rate R --seconds S --seed N``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import cast
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


class Exchange(asyncio.Protocol):
    """One keep-alive connection; one request at a time on it."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[float] | None = None
        self.reusable = True
        self.body = bytearray()  # an error answer's, for its code (a stream's text is not kept)
        self.server_timing: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has write() but is not registered as an asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._end(exc or ConnectionResetError("closed before the answer ended"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.server_timing = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        if self.parser.get_status_code() != 200:
            self.body += chunk

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        self.reusable = self.reusable and self.parser.should_keep_alive()
        if self.done is not None and not self.done.done():
            self.done.set_result(now)

    def _end(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    async def send(self, request: bytes) -> tuple[int, float]:
        """(status, seconds from the write to the answer's last byte)."""
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.body.clear()
        self.server_timing = None
        t0 = time.perf_counter()
        self.transport.write(request)
        ended = await self.done
        return self.parser.get_status_code(), ended - t0


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[Exchange] = []

    def request(self, body: bytes) -> bytes:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body

    async def post(self, body: bytes) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        exchange = None
        while self.idle and exchange is None:
            exchange = self.idle.pop()
            if not exchange.reusable:  # the server closed it while it was idle (its keep-alive timeout)
                exchange = None
        if exchange is None:
            _, exchange = await loop.create_connection(Exchange, self.host, self.port)
        try:
            async with asyncio.timeout(GIVE_UP):
                status, seconds = await exchange.send(self.request(body))
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            if exchange.transport is not None:
                exchange.transport.close()
            return {"status": 0, "code": type(exc).__name__, "e2e": None}
        if exchange.reusable:
            self.idle.append(exchange)
        elif exchange.transport is not None:
            exchange.transport.close()
        code, server_ms = code_of(status, bytes(exchange.body)), proxy_ms(exchange.server_timing)
        return {"status": status, "code": code, "e2e": seconds, "server_ms": server_ms}


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
