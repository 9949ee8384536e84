"""A refused request leaves nothing for the cycle collector: its error's traceback holds the frames it was
raised through, and a frame that keeps the error (or a watch that keeps its cancelled watcher task) makes a
reference cycle holding the whole request until a garbage collection, whose pauses land on other requests.
Each test counts what ``gc.collect`` finds after the request, with automatic collection off; the first one's
positive control makes such a cycle on purpose and is found."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from proxy.app_parts import build_upstreams
from proxy.asgi import BodyLimits
from proxy.config import parse
from proxy.departure import DisconnectWatch
from proxy.door import ChatRoute
from proxy.errors import Overloaded, UpstreamError, UpstreamUnavailable
from proxy.routes import OpenAIChat
from proxy.types import Call, Chunk, Reply, Target, Trace
from proxy.upstream import Upstream
from proxy.upstream.router import Router


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def body(stream: bool) -> bytes:
    return orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream})


async def refused(stream: bool, keep: list[Any] | None = None) -> int:
    """The status of a chat request that the chain refuses (as the buffer sheds), with no Departure in the
    scope (a watcher task reads ``receive``, for a stream at once). With ``keep``, the chain keeps its
    error in a cycle (and puts the request's call in ``keep``)."""

    async def chain(call: Call) -> Reply:
        if keep is not None:
            # The error in a local of the frame it is raised from: frame, error, traceback, frame.
            error = Overloaded("Too many requests.", status=429, code="queue_full", retry_after=1.0)
            keep.append(call)
            raise error
        raise Overloaded("Too many requests.", status=429, code="queue_full", retry_after=1.0)

    received = [{"type": "http.request", "body": body(stream), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await ChatRoute(OpenAIChat(), chain, BodyLimits(1 << 20, None))(scope, receive, send)  # type: ignore[arg-type]
    for _ in range(3):  # the cancelled watcher task ends
        await asyncio.sleep(0)
    return statuses[0]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_request_leaves_no_reference_cycle(no_automatic_gc: None, stream: bool) -> None:
    gc.collect()
    for _ in range(5):
        assert await refused(stream) == 429
    assert gc.collect() == 0


async def test_positive_control_a_request_kept_in_a_cycle_with_its_error_is_found(
    no_automatic_gc: None,
) -> None:
    gc.collect()
    kept: list[Any] = []
    assert await refused(False, kept) == 429
    kept.clear()
    assert gc.collect() > 0
    assert await refused(False) == 429
    assert gc.collect() == 0


async def test_a_closed_watch_lets_go_of_its_cancelled_watcher(no_automatic_gc: None) -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    gc.collect()
    watch = DisconnectWatch(receive)
    watcher = watch._watcher
    assert watcher is not None
    await asyncio.sleep(0)  # the watcher waits in receive
    watch.close()
    assert watch._watcher is None
    with pytest.raises(asyncio.CancelledError):
        await watcher
    del watcher, watch
    assert gc.collect() == 0


async def test_a_stream_that_fails_after_its_first_chunk_leaves_no_reference_cycle(
    no_automatic_gc: None,
) -> None:
    async def chain(call: Call) -> Reply:
        async def stream() -> Any:
            yield Chunk(content="Hel")
            await asyncio.sleep(0)
            raise UpstreamError("The upstream failed mid-stream.")

        return stream()  # type: ignore[no-any-return]

    async def one() -> bytes:
        received = [{"type": "http.request", "body": body(True), "more_body": False}]
        written: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if received:
                return received.pop()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            written.append(message.get("body", b""))

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        await ChatRoute(OpenAIChat(), chain, BodyLimits(1 << 20, None))(scope, receive, send)  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)
        return b"".join(written)

    gc.collect()
    for _ in range(5):
        assert b"mid-stream" in await one()
    assert gc.collect() == 0


@pytest.mark.parametrize("cycle", [False, True], ids=["router", "positive-control"])
async def test_every_target_failing_leaves_no_reference_cycle(no_automatic_gc: None, cycle: bool) -> None:
    cfg = parse({
        "upstreams": {"a": {"kind": "openai", "url": "http://127.0.0.1:9/v1"},
                      "b": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"targets": [{"upstream": "a", "model": "m"}, {"upstream": "b", "model": "m"}]}},
    })  # fmt: skip
    router = Router(cfg.models, build_upstreams(cfg))

    async def attempt(up: Upstream, target: Target) -> None:
        error = UpstreamUnavailable(f"Upstream '{up.cfg.name}' refused the connection.")
        if cycle:  # the error in a local of the frame it is raised from: frame, error, traceback, frame
            raise error
        del error
        raise UpstreamUnavailable(f"Upstream '{up.cfg.name}' refused the connection.")

    gc.collect()
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            trace = Trace(request_id="r", client="127.0.0.1", route="/v1/chat/completions", started=0.0)
            await router._first_success("chat", trace, attempt)
    assert (gc.collect() > 0) is cycle
