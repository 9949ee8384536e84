"""The floor: a bare Starlette + aiohttp + orjson pass-through with no features at all.

It reads the body, parses it (any real proxy must, to route on ``model``), forwards it over one shared
keep-alive session and relays the reply: JSON whole, a stream byte for byte. What Fluido costs above
this is what its features cost; this much any Python proxy on this stack pays.
Run: ``python -m bench.passthrough --port 9001 --upstream http://127.0.0.1:9000/v1``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_HEADERS = {"content-type": "application/json"}


def create_app(upstream: str) -> Starlette:
    url = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Same pool size as Fluido's default (max_connections = 100), so both keep the same connections.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            sessions.append(session)
            yield

    async def relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for data in resp.content.iter_any():
                yield data
        finally:
            resp.release()

    async def chat(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        resp = await sessions[0].post(url, data=orjson.dumps(payload), headers=_HEADERS)
        if payload.get("stream"):
            return StreamingResponse(relay(resp), status_code=resp.status, media_type="text/event-stream")
        async with resp:
            body = await resp.read()
        return Response(body, status_code=resp.status, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1 base URL")
    args = parser.parse_args()
    app = create_app(args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
