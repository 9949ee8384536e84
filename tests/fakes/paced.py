"""A paced OpenAI-compatible upstream in its own process, for load, disconnect and fault tests.

It is the fake vLLM server streaming ``tokens`` pieces ``interval`` seconds apart, as a model generating
at a steady rate does, plus what a test in another process needs to see at ``GET /_fake/stats``:

- ``started``, ``finished``: chat requests begun, and answered to the end;
- ``in_flight``: chat handlers running now; ``connections``: client connections open now;
- ``bytes_sent``: stream bytes written so far (it stops growing when every reader has stalled);
- ``cancels``: ``[marker, t]`` for each request whose client left before the end, ``t`` being when the
  fake noticed (``time.monotonic()``: one clock for every process on Linux, so a test can compare it
  with when its own client left). The marker is the last user message, which tests make unique.

``GET /_fake/received`` returns every chat and embeddings body and its headers, for tests that check
what reached the upstream. Idle keep-alive connections are closed after ``--keepalive`` seconds (5 by default,
as uvicorn does for vLLM), and a handler is cancelled the moment its client leaves.

With ``--piece-bytes``, a request whose marker starts with "large" gets a stream of ``tokens`` pieces of that
size, made as they are sent (no pacing): a reply larger than every buffer between the fake and a client that
never reads.

Run: ``python -m tests.fakes.paced --port 9000 [--tokens 40] [--interval 0.1] [--keepalive 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from ._server import counts_disconnects, json_response
from .vllm import FakeVLLM

MODEL = "paced-model"


def marker(body: Any) -> str:
    """The last user message's text: tests make it unique per request."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
    return ""


class PacedVLLM(FakeVLLM):
    """FakeVLLM at a fixed token rate, counting what a leak or cancellation check needs."""

    def __init__(self, tokens: int, interval: float, first: float = 0.0, piece_bytes: int = 0) -> None:
        super().__init__(models=[MODEL])
        self.reply = " ".join(f"tok{i}" for i in range(tokens))
        self.tokens = tokens
        self.piece_bytes = piece_bytes
        self.delay_between = interval
        self.delay_first = first
        self.started = 0
        self.finished = 0
        self.in_flight = 0
        self.cancels: list[tuple[str, float]] = []
        self.bytes_sent = 0

    def _routes(self) -> list[web.RouteDef]:
        return [
            *super()._routes(),
            web.get("/_fake/stats", self._stats),
            web.get("/_fake/received", self._received),
        ]

    async def _sleep(self, request: web.Request, seconds: float) -> None:
        # The server cancels a handler whose client left (handler_cancellation): no need to poll for it,
        # which with hundreds of streams would keep this process too busy to notice anything promptly.
        await asyncio.sleep(seconds)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # aiohttp keeps the body: the vLLM handler reads it again
        try:
            tag = marker(orjson.loads(raw))
        except orjson.JSONDecodeError:
            tag = ""
        self.started += 1
        self.in_flight += 1
        gone_before = self.disconnects
        try:
            if self.piece_bytes and tag.startswith("large"):
                resp = await self._large(request)
            else:
                resp = await super()._chat(request)
        except asyncio.CancelledError:
            self.cancels.append((tag, time.monotonic()))  # the client left while we waited
            raise
        finally:
            self.in_flight -= 1
        if self.disconnects > gone_before:
            self.cancels.append((tag, time.monotonic()))  # the client left while we wrote
        else:
            self.finished += 1
        return resp

    @counts_disconnects
    async def _large(self, request: web.Request) -> web.StreamResponse:
        """A stream of ``tokens`` pieces of ``piece_bytes`` each, made as they are sent: replies far larger
        than any buffer on the way, without holding them in memory here."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-large", "object": "chat.completion.chunk", "created": 0, "model": MODEL}

        def frame(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps(head | {"choices": [choice]}) + b"\n\n"

        await self._write(resp, frame({"role": "assistant", "content": ""}))
        piece = "x" * (self.piece_bytes - 1)
        for i in range(self.tokens):
            await self._write(resp, frame({"content": f"{i % 10}{piece}"}))
        await self._write(resp, frame({}, "stop"))
        await self._write(resp, b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        await super()._write(resp, data)
        self.bytes_sent += len(data)  # counted once written: a stalled reader stops the count

    async def _stats(self, request: web.Request) -> web.Response:
        server = self._runner.server if self._runner is not None else None
        return json_response(
            {
                "started": self.started,
                "finished": self.finished,
                "in_flight": self.in_flight,
                "connections": len(server.connections) if server is not None else 0,
                "cancels": self.cancels,
                "disconnects": self.disconnects,
                "bytes_sent": self.bytes_sent,
            }
        )

    async def _received(self, request: web.Request) -> web.Response:
        headers = [{str(k): v for k, v in h.items()} for h in self.headers]  # aiohttp's keys are istr
        return json_response({"bodies": self.requests, "headers": headers})


async def serve(port: int, fake: PacedVLLM, keepalive: float) -> None:
    app = web.Application()
    app.add_routes(fake._routes())
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=0.5, keepalive_timeout=keepalive, handler_cancellation=True
    )
    fake._runner = runner
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    await asyncio.Event().wait()  # until the process is stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between streamed pieces")
    parser.add_argument("--first", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--keepalive", type=float, default=5.0, help="idle connections closed after this")
    parser.add_argument("--piece-bytes", type=int, default=0, help="> 0: large pieces, made as they are sent")
    args = parser.parse_args()
    fake = PacedVLLM(args.tokens, args.interval, args.first, args.piece_bytes)
    import uvloop

    uvloop.run(serve(args.port, fake, args.keepalive))


if __name__ == "__main__":
    main()
