"""A lean HTTP/1.1 keep-alive load generator: asyncio protocols + httptools, no client library.

aiohttp's client costs several times more CPU per request than this, and the generator shares its core
with the upstream, so the leaner it is, the more surely the proxy under test is what is being measured.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import cast

import httptools
import orjson

# A data frame with non-empty content: the first token the user sees (the role chunk has "content":"").
_CONTENT = re.compile(rb'"content":"[^"]')
_DONE = b"data: [DONE]\n\n"
_SERIAL = itertools.count()  # numbers unique prompts across every run of this process


# The slot a per-request number fills when every request must be a new prompt (a cache miss each time).
SLOT = b"#000000000000"


@dataclass(frozen=True)
class RequestTemplate:
    """A request's bytes, built once; with ``unique``, each request gets its own number in the prompt."""

    head: bytes
    tail: bytes = b""
    unique: bool = False

    def build(self, n: int) -> bytes:
        return self.head + b"#%012d" % n + self.tail if self.unique else self.head


def chat_request(
    model: str, stream: bool, *, key: str = "", unique: bool = False, temperature: float = 0.0
) -> RequestTemplate:
    """A small, typical chat request. Temperature 0 makes it cacheable, as a deterministic request is."""
    question = "Say hello in one short sentence, please." + (" " + SLOT.decode() if unique else "")
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
        ],
        "max_tokens": 64,
        "temperature": temperature,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: fluido-bench\r\n{auth}"
        f"accept: */*\r\ncontent-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n"
    )
    whole = head.encode() + raw
    if not unique:
        return RequestTemplate(whole)
    before, after = whole.split(SLOT)
    return RequestTemplate(before, after, unique=True)


class BadReply(Exception):
    """The reply was not a complete, successful chat completion."""


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time. Times are taken in the parser's callbacks, as
    the bytes arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[float, float]] | None = None
        self.stream = False
        self.seen = b""
        self.tail = b""
        self.size = 0
        self.first = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(BadReply(f"connection lost ({exc})"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(BadReply(f"unparsable reply ({exc})"))

    def on_message_begin(self) -> None:
        self.seen = self.tail = b""
        self.size = 0
        self.first = 0.0

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.stream:
            if not self.first:
                # Frames may be split across reads: search everything so far until the first token shows up.
                self.seen += body
                if _CONTENT.search(self.seen):
                    self.first = time.perf_counter()
            self.tail = (self.tail + body)[-len(_DONE) :]

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        status = self.parser.get_status_code()
        if status != 200:
            waiter.set_exception(BadReply(f"status {status}"))
        elif self.stream and (not self.first or self.tail != _DONE):
            waiter.set_exception(BadReply("stream without a token or without data: [DONE]"))
        elif not self.size:
            waiter.set_exception(BadReply("empty body"))
        else:
            waiter.set_result((self.first, end))

    def request(self, raw: bytes, stream: bool) -> asyncio.Future[tuple[float, float]]:
        """Send one request; the future gives (first token time or 0, end time) in perf_counter seconds."""
        assert self.transport is not None
        self.stream = stream
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Samples:
    latency: list[float] = field(default_factory=list)  # seconds: whole reply
    ttft: list[float] = field(default_factory=list)  # seconds: first content frame (streams only)
    wall: float = 0.0
    errors: int = 0
    first_error: str = ""


async def connect(port: int, n: int) -> list[Connection]:
    loop = asyncio.get_running_loop()
    pairs = [await loop.create_connection(Connection, "127.0.0.1", port) for _ in range(n)]
    return [protocol for _, protocol in pairs]


async def run_load(
    port: int, conns: list[Connection], raw: bytes | RequestTemplate, stream: bool, count: int,
    max_seconds: float, max_errors: int = 20,
) -> Samples:  # fmt: skip
    """``count`` requests over all connections, each connection keeping one in flight. It stops early
    at ``max_seconds``, so a slow case cannot stretch the run, or after ``max_errors`` bad replies: a
    proxy failing under load is reported as a finding, not allowed to crash or stall the run. A
    connection that saw a bad reply is replaced (in ``conns``, so the caller closes the new one)."""
    samples = Samples()
    template = raw if isinstance(raw, RequestTemplate) else RequestTemplate(raw)
    remaining = count
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker(slot: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            if t0 > deadline:
                return
            try:
                first, end = await conns[slot].request(template.build(next(_SERIAL)), stream)
            except BadReply as exc:
                samples.errors += 1
                samples.first_error = samples.first_error or str(exc)
                conns[slot].close()
                if samples.errors >= max_errors:
                    remaining = 0
                    return
                conns[slot] = (await connect(port, 1))[0]
                continue
            samples.latency.append(end - t0)
            if stream:
                samples.ttft.append(first - t0)

    await asyncio.gather(*(worker(i) for i in range(len(conns))))
    samples.wall = time.perf_counter() - start
    return samples
