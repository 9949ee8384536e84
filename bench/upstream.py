"""A zero-delay fake OpenAI-compatible upstream: raw asyncio + httptools, every reply prebuilt.

It must never be the bottleneck, so it does no per-request work beyond parsing the request and reading
``stream`` from the body. It answers:

- ``POST /v1/chat/completions``: a chat.completion JSON, or (``"stream": true``) an SSE stream of a role
  chunk, ``TOKENS`` content chunks, a finish chunk, a usage chunk and ``data: [DONE]``, one HTTP chunk each;
- ``GET /v1/models``: one model (Fluido's warm-up asks for it).

Requests are not pipelined by any client used here, so a streamed reply never overlaps the next request.
Run: ``python -m bench.upstream --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import orjson
import uvloop

MODEL = "bench-model"
# 32 content tokens: a short reply, long enough that the per-event cost of a stream shows.
TOKENS = (
    "Hello", ",", " this", " is", " a", " fake", " reply", " from", " the", " benchmark", "'s", " zero",
    "-delay", " upstream", ",", " sent", " one", " token", " per", " event", " the", " way", " a", " real",
    " server", " streams", " its", " output", " to", " a", " client", ".",
)  # fmt: skip
_HEAD = {"id": "chatcmpl-bench", "created": 1700000000, "model": MODEL}
_USAGE = {"prompt_tokens": 21, "completion_tokens": len(TOKENS), "total_tokens": 21 + len(TOKENS)}


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
    event = b"data: " + orjson.dumps(
        {**_HEAD, "object": "chat.completion.chunk", "choices": choices, **extra}
    )
    return _http_chunk(event + b"\n\n")


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _choice(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


COMPLETION = _response(
    b"200 OK",
    b"application/json",
    orjson.dumps(
        {
            **_HEAD,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    ),
)
MODELS = _response(b"200 OK", b"application/json", orjson.dumps({"object": "list", "data": [{"id": MODEL}]}))
NOT_FOUND = _response(b"404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
STREAM_FRAMES = (
    _chunk([_choice({"role": "assistant", "content": ""})]),
    *(_chunk([_choice({"content": t})]) for t in TOKENS),
    _chunk([_choice({}, "stop")]),
    _chunk([], usage=_USAGE),
)
STREAM_END = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One client connection; httptools calls the ``on_*`` methods as it parses."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        method = self.parser.get_method()
        if method == b"POST" and self.url == b"/v1/chat/completions":
            if orjson.loads(b"".join(self.body)).get("stream"):
                asyncio.get_running_loop().create_task(self._stream(transport))
                return
            transport.write(COMPLETION)
        elif method == b"GET" and self.url == b"/v1/models":
            transport.write(MODELS)
        else:
            transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive():
            transport.close()

    @staticmethod
    async def _stream(transport: asyncio.Transport) -> None:
        # One write per event, yielding to the loop between them, so events leave as separate segments
        # the way a real token stream does, only without the wait between tokens.
        transport.write(STREAM_HEAD)
        for frame in STREAM_FRAMES:
            if transport.is_closing():
                return
            transport.write(frame)
            await asyncio.sleep(0)
        transport.write(STREAM_END)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(UpstreamProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
