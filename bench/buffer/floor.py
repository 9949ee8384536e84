"""The floor under a shed answer's time on this machine: ``python -m bench.buffer.floor --port P`` serves
a minimal ASGI app on Fluido's HTTP server (uvicorn's httptools protocol on uvloop) that answers every
request at once with a 429 of the shape Fluido's shed answers have. Run on Fluido's core and timed by the
shed probe at the probe's rates, it gives what the machine itself takes for such an answer (the loopback,
a sleeping core's wake-up, the server's parse and write): above it is Fluido's own time."""

from __future__ import annotations

import argparse
import os
from typing import Any

import orjson
import uvicorn

from bench.buffer.scenarios import probe_run
from bench.procs import Fleet

ERROR = {"message": "The upstream is saturated; retry in 1 s.", "type": "rate_limit_error", "param": None,
         "code": "deadline_unreachable"}  # fmt: skip
BODY = orjson.dumps({"error": ERROR})
HEAD = {
    "type": "http.response.start",
    "status": 429,
    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"retry-after-ms", b"1000"),
                (b"content-length", str(len(BODY)).encode())],
}  # fmt: skip


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    more = True
    while more:  # the whole request, as Fluido reads it before it answers
        more = (await receive()).get("more_body", False)
    await send(HEAD)
    await send({"type": "http.response.body", "body": BODY})


async def floor_run(core: int | None, rest: set[int], rate: float, seconds: float) -> list[dict[str, Any]]:
    """The probe's requests against the floor server on ``core``, the probe on ``rest``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, rest)  # the probe process, as in the load cells
    try:
        with Fleet() as fleet:
            server = fleet.start("floor", "bench.buffer.floor", [], cpu=core)
            fleet.wait_listening(server)
            requests, _ = await probe_run(f"http://127.0.0.1:{server.port}", rate, seconds)
            return requests
    finally:
        os.sched_setaffinity(0, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", lifespan="off",
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
