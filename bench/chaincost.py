"""What each part of the chain costs a non-streamed request, in-process: ``python -m bench.chaincost``.

Every variant is the whole app (observability, authentication, the door, the chain, the router) built from
``bench.fluido_server``'s configurations, with its upstream's adapter replaced by one that answers at once
from memory: no socket, no upstream, no HTTP parsing, so what is left is Fluido's own work per request.
Variants: ``routing`` (nothing on), ``full`` (``config.toml``'s chain plus an API key and limits), and
``full`` without one part each (``--without``). Every request is a new prompt, as in ``bench.overhead``.

All variants run in one process, their rounds interleaved, so a busy minute on a shared machine falls on
all of them alike; each round's figure is the process's CPU time per request. A part's cost is the full
chain's median less the median without it. A loop turn follows every request, as a server's would (timers
uvloop cancels are freed only then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import statistics
import time
from typing import Any

import orjson
import uvloop

from bench.fluido_server import ALIAS, BENCH_KEY, ROUTING_ONLY, WITHOUT, full_chain
from proxy.app import create_app
from proxy.config import parse
from proxy.types import JSON, ChatRequest, Choice, Completion, Message, Target, Usage

ANSWER = Message("assistant", "Hello, this is a fake reply from the benchmark's instant upstream.")
REPLY = Completion((Choice(0, ANSWER, "stop"),), Usage(21, 32))
_SERIAL = itertools.count()


class InstantAdapter:
    """The upstream's adapter, answering every chat at once; everything else goes to the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def chat(self, req: ChatRequest, target: Target) -> Completion:
        return REPLY

    def __getattr__(self, name: str) -> JSON:
        return getattr(self.real, name)


def build(variant: str) -> tuple[Any, str]:
    """The app of a variant and the API key its requests carry."""
    if variant == "routing":
        data: dict[str, Any] = dict(ROUTING_ONLY)
    else:
        data = full_chain(False, variant.removeprefix("full").removeprefix("-"))
    data |= {
        "upstreams": {"up": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},  # never reached
        "models": {ALIAS: {"targets": [{"upstream": "up", "model": "bench-model"}]}},
    }
    app = create_app(parse(data, environ={"BENCH_KEY": BENCH_KEY}), log_sink=io.BytesIO())
    upstream = app.state.router.upstreams["up"]
    upstream.adapter = InstantAdapter(upstream.adapter)
    keyed = variant.startswith("full") and variant != "full-key"
    return app, BENCH_KEY if keyed else ""


def request_scope(body: bytes, key: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"fluido-bench")]
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080), "headers": headers,
    }  # fmt: skip


async def one(app: Any, key: str) -> int:
    """One new prompt through the app; its status."""
    question = f"Say hello in one short sentence, please. #{next(_SERIAL):012d}"
    body = orjson.dumps({
        "model": ALIAS, "max_tokens": 64, "temperature": 0,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": question}],
    })  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the client stays: a disconnect watch waits here
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(request_scope(body, key), receive, send)
    await asyncio.sleep(0)
    return status


async def measure(variants: list[str], rounds: int, per_round: int) -> dict[str, list[float]]:
    apps = {variant: build(variant) for variant in variants}
    cpu: dict[str, list[float]] = {variant: [] for variant in variants}
    async with contextlib.AsyncExitStack() as stack:
        for app, _ in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        for variant, (app, key) in apps.items():  # warm: caches, the buffer's controller, code paths
            statuses = {await one(app, key) for _ in range(300)}
            assert statuses == {200}, (variant, statuses)
        for _ in range(rounds):
            for variant, (app, key) in apps.items():
                started = time.process_time()
                for _ in range(per_round):
                    await one(app, key)
                cpu[variant].append((time.process_time() - started) / per_round)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=300, help="requests per variant per round")
    parser.add_argument("--without", nargs="*", default=list(WITHOUT), help="parts to leave out in turn")
    args = parser.parse_args()
    variants = ["routing", "full", *(f"full-{part}" for part in args.without)]
    cpu = uvloop.run(measure(variants, args.rounds, args.per_round))
    full = statistics.median(cpu["full"])
    print(f"CPU per non-streamed request, in-process, instant upstream ({args.rounds} interleaved rounds of "
          f"{args.per_round}; median, and the rounds' 10th-90th percentiles):")  # fmt: skip
    for variant, values in cpu.items():
        ordered = sorted(values)
        low, high = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
        median = statistics.median(values)
        part = f"   the part left out: {(full - median) * 1e6:6.1f} µs" if variant.startswith("full-") else ""
        print(f"  {variant:<18}{median * 1e6:7.1f} µs  ({low * 1e6:.0f}-{high * 1e6:.0f}){part}")


if __name__ == "__main__":
    main()
