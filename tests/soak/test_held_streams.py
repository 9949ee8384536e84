"""Many streams held for a long time through a real Fluido process: nothing grows, everything comes back.

Memory, descriptors and upstream connections are read from /proc, outside the process; asyncio tasks from
``GET /admin/runtime``, the one thing only the process itself can count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.soak.conftest import fluido_config
from tests.soak.load import ANSWERED, Deadline, Tally, chat_body, request, scale, session, table
from tests.support.processes import Fluido, PacedUpstream
from tests.support.procfs import open_fds, rss_bytes, tcp_connections

STREAMS = int(scale(40, 200))
HOLD_S = scale(8.0, 60.0)
WARMUP_S = scale(3.0, 15.0)


def holdings(server: Fluido, upstream: PacedUpstream) -> dict[str, int]:
    return {
        "open_fds": open_fds(server.pid),
        "tasks": server.runtime()["tasks"],
        "upstream_connections": tcp_connections(server.pid, upstream.port),
    }


async def settle_to(server: Fluido, upstream: PacedUpstream, baseline: dict[str, int]) -> dict[str, int]:
    """Poll until what Fluido holds is back to ``baseline`` (idle upstream connections expire within ~5 s)."""
    now: dict[str, int] = {}

    def back() -> bool:
        nonlocal now
        now = holdings(server, upstream)
        return all(now[k] <= v for k, v in baseline.items())

    await Deadline(20).poll(back, every=0.25)
    return now


async def idle_baseline(server: Fluido, upstream: PacedUpstream) -> dict[str, int]:
    async with session() as s:
        first = await request(s, server.url, chat_body("warm", stream=True), within=30)
        assert first.outcome == ANSWERED, first
    # The pooled connection of that first request expires, as every idle one does.
    assert await Deadline(20).poll(lambda: tcp_connections(server.pid, upstream.port) == 0, every=0.25)
    return holdings(server, upstream)


async def test_held_streams_keep_memory_flat_and_give_back_every_descriptor_task_and_connection(
    paced: Callable[..., PacedUpstream], fluido: Callable[..., Fluido]
) -> None:
    upstream = paced(tokens=20, interval=0.1)
    server = fluido(fluido_config(upstream.url))
    baseline = await idle_baseline(server, upstream)

    tally = Tally(f"{STREAMS} streams held {HOLD_S:g} s")
    samples: list[tuple[float, int]] = []
    peak: dict[str, int] = {}
    start = time.monotonic()
    end = start + HOLD_S

    async def client(i: int, s: Any) -> None:
        n = 0
        while time.monotonic() < end:
            n += 1
            tally.add(await request(s, server.url, chat_body(f"hold {i} {n}", stream=True), within=30))

    async def sample() -> None:
        while time.monotonic() < end:
            samples.append((time.monotonic() - start, rss_bytes(server.pid)))
            conns = tcp_connections(server.pid, upstream.port)
            peak["upstream_connections"] = max(peak.get("upstream_connections", 0), conns)
            peak["open_fds"] = max(peak.get("open_fds", 0), open_fds(server.pid))
            await asyncio.sleep(0.5)

    async with session() as s:
        await asyncio.gather(sample(), *(client(i, s) for i in range(STREAMS)))

    after = await settle_to(server, upstream, baseline)
    warm = [rss for t, rss in samples if t <= WARMUP_S][-1]
    held = [rss for t, rss in samples if t > WARMUP_S]
    mib = 1024 * 1024
    print(table("Held streams", [tally]))
    print(
        f"RSS after warm-up {warm / mib:.1f} MiB, max while held {max(held) / mib:.1f} MiB "
        f"({(max(held) / warm - 1) * 100:+.1f}%), at the end {held[-1] / mib:.1f} MiB; "
        f"peak fds {peak['open_fds']}, peak upstream connections {peak['upstream_connections']}"
    )
    print(f"baseline {baseline}, after {after}")

    assert tally.outcomes[ANSWERED] == tally.sent > STREAMS, tally
    # The load was real: every client held a stream at once, each on its own upstream connection.
    assert peak["upstream_connections"] >= STREAMS * 0.9
    assert max(held) <= warm * 1.10, f"RSS grew past 10% after warm-up: {samples}"
    assert after == {k: min(after[k], v) for k, v in baseline.items()}, (baseline, after)
