"""Fluido's own cost of a shed answer: the whole app (observability, body read, parsing, classifier,
compaction, buffer, the error in OpenAI's shape) called in-process, with no socket, one request at a time,
while its upstream's one slot is taken and 30 long requests wait: each new one is predicted to start past
its deadline (the costliest refusal: the queue is replayed on the slots). Both wall time and the process's
CPU time: on a shared machine the wall time's tail is the process waiting for a core, not Fluido's work."""

from __future__ import annotations

import asyncio
import gc
import io
import time
from typing import Any

import orjson

from bench.buffer.scenarios import bodies
from bench.load.stats import percentile
from middleware.buffer.queue import Entry
from proxy.app import create_app
from proxy.config import parse
from proxy.departure import DEPARTURE, Departure

CONFIG = {
    "upstreams": {"fake": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},
    "models": {"chat": {"targets": [{"upstream": "fake", "model": "capacity-model"}]}},
    "cache": {"enabled": False},
    "log": {"access_log": False},
    "buffer": {"upstreams": {"fake": {"parallel": 1, "adaptive": False}}},
}


def scope_for(body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        DEPARTURE: Departure(),  # as `fluido serve`'s protocol gives it: no task watches for the client
    }  # fmt: skip


def exchange(body: bytes) -> tuple[Any, Any, list[tuple[int, float, float]]]:
    """ASGI receive and send for one request; ``send`` notes (status, wall, CPU) at the headers."""
    sent = False
    answered: list[tuple[int, float, float]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the client stays: the route's disconnect watch waits here
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered.append((message["status"], time.perf_counter(), time.process_time()))

    return receive, send, answered


async def shed_path(count: int = 2000) -> dict[str, list[float]]:
    """Seconds from calling the app to its response headers, wall and CPU (all, and per class), for
    ``count`` shed requests; and the garbage collections per generation during the run."""
    app = create_app(parse(CONFIG), log_sink=io.BytesIO())  # logs are not what is measured
    gate = app.state.buffer.admissions["fake"].gate
    now = asyncio.get_running_loop().time()
    # One running, 30 waiting with deadlines before any newcomer's (queued before any holding time was
    # measured, so admitted), then the holding times as measured on the capacity fake: about 30 s of work
    # ahead of each newcomer.
    for _ in range(31):
        assert isinstance(gate.arrive("long", 4.0, now), Entry)
    gate.forecast.observe("short", 0.25)
    gate.forecast.observe("long", 1.05)
    load = bodies(count=count, seed=13)
    gc.freeze()  # as the app's lifespan does once it is built
    got: dict[str, list[float]] = {"wall": [], "cpu": [], "cpu short": [], "cpu long": []}
    codes: set[int] = set()
    collections = gc.get_stats()
    for cls, body in load:
        receive, send, answered = exchange(body)
        t0, c0 = time.perf_counter(), time.process_time()
        await app(scope_for(body), receive, send)
        (status, wall_at, cpu_at), *_ = answered
        codes.add(status)
        got["wall"].append(wall_at - t0)
        got["cpu"].append(cpu_at - c0)
        got[f"cpu {cls}"].append(cpu_at - c0)
    assert codes == {429} and gate.depth == 30, codes
    after = gc.get_stats()
    got["collections"] = [after[n]["collections"] - collections[n]["collections"] for n in range(3)]
    return got


# A long prompt's refusal costs several short ones' (the classifier reads its whole text): the tail of
# the mix is the long class's cost, not an occasional stall.
LABELS = {"wall": "wall time", "cpu": "CPU time of the process", "cpu short": "  of it, short prompts",
          "cpu long": "  of it, long prompts"}  # fmt: skip


def us(values: list[float], q: float) -> str:
    return f"{(percentile(values, q) or 0.0) * 1e6:.0f} us"


async def report() -> None:
    got = await shed_path()
    buffer = orjson.dumps(CONFIG["buffer"]).decode()
    print(f"\nShed path inside Fluido, in-process ({len(got['wall'])} requests one at a time, no socket;"
          f" buffer {buffer}, 30 waiting), from the call to the 429's headers:")  # fmt: skip
    for kind, label in LABELS.items():
        print(f"  {label:<31}: p50 {us(got[kind], 50)}, p99 {us(got[kind], 99)}")
    print(f"  garbage collections (generations 0, 1, 2) during the run: {got['collections']}")
