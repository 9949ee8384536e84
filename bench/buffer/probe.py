"""The benchmark's lean client: one timed request that also keeps what a shed answer says (status, code,
Retry-After), open-loop Poisson runs on ``fluido bench``'s schedule, closed loops, and /metrics reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.load.schedule import arrivals
from bench.load.stats import percentile


@dataclass(frozen=True, slots=True)
class Shot:
    """One request's outcome. Times in seconds from its send."""

    cls: str
    status: int
    code: str
    ttft: float | None
    e2e: float
    finished: bool
    retry_after: bool  # a shed answer carried Retry-After and retry-after-ms within 1-60 s
    events: int  # SSE events carrying text
    queue_ms: float | None
    server_ms: float | None = None  # Fluido's own time to the answer's headers (Server-Timing proxy;dur)
    sent_at: float = 0.0  # seconds from the start of the run


GIVE_UP = 20.0  # seconds: a request still unanswered then is abandoned (its client leaves)


def ttfts(shots: list[Shot], cls: str | None = None) -> list[float]:
    """The TTFT of each served request (of ``cls`` only, when given)."""
    return [s.ttft for s in shots if s.status == 200 and s.ttft is not None and cls in (None, s.cls)]


def window_p99s(
    shots: list[Shot], window: float, cls: str | None = None
) -> list[tuple[float, float | None, int]]:
    """Per ``window`` seconds of send time: its middle, the served requests' TTFT p99 (None when none was
    served) and how many were served."""
    last = max((s.sent_at for s in shots), default=0.0)
    rows = []
    for w in range(int(last // window) + 1):
        got = ttfts([s for s in shots if w * window <= s.sent_at < (w + 1) * window], cls)
        rows.append(((w + 0.5) * window, percentile(got, 99), len(got)))
    return rows


def proxy_ms(server_timing: str | None) -> float | None:
    """Fluido's ``proxy;dur=`` from a Server-Timing header: from the request reaching its app to the
    answer's headers, measured inside the server (no client or network time)."""
    for part in (server_timing or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "proxy" and dur:
            return float(dur)
    return None


async def shoot(session: aiohttp.ClientSession, url: str, cls: str, body: bytes, at: float = 0.0) -> Shot:
    t0 = time.perf_counter()
    ttft, events, finished, code, retry, status, queue_ms = None, 0, False, "", False, 0, None
    server_ms = None
    try:
        async with asyncio.timeout(GIVE_UP), session.post(url + "/v1/chat/completions", data=body) as resp:
            status = resp.status
            queue_ms = (
                float(resp.headers["x-fluido-queue-ms"]) if "x-fluido-queue-ms" in resp.headers else None
            )
            if status != 200:
                server_ms = proxy_ms(resp.headers.get("server-timing"))
                raw = await resp.read()
                err = orjson.loads(raw).get("error", {}) if raw.startswith(b"{") else {}
                code = str(err.get("code") or err.get("type") or f"http_{status}")
                after, after_ms = resp.headers.get("retry-after"), resp.headers.get("retry-after-ms")
                retry = bool(after and after_ms) and 1 <= float(after) <= 60
            else:
                async for line in resp.content:
                    if not line.startswith(b"data: {"):
                        continue
                    event = orjson.loads(line[6:])
                    for choice in event.get("choices") or ():
                        if choice["delta"].get("content"):
                            events += 1
                            ttft = ttft if ttft is not None else time.perf_counter() - t0
                        finished = finished or bool(choice.get("finish_reason"))
                    if "error" in event:
                        code = "stream_error"
    except aiohttp.ClientError as exc:
        status, code = 0, type(exc).__name__
    except TimeoutError:
        status, code = 0, "gave_up"
    e2e = time.perf_counter() - t0
    return Shot(cls, status, code, ttft, e2e, finished, retry, events, queue_ms, server_ms, at)


def session() -> aiohttp.ClientSession:
    # No connection limit: the load generator must never queue requests itself.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers={"content-type": "application/json"}
    )


async def open_loop(
    urls: list[str], rate: float, seconds: float, bodies: list[tuple[str, bytes]], seed: int = 7
) -> list[Shot]:
    """Poisson arrivals at ``rate``/s for ``seconds``; request i goes to ``urls[i % len(urls)]``."""
    times = arrivals(rate, seed, duration=seconds)
    async with session() as s:
        t0 = time.perf_counter()
        tasks = []
        for i, at in enumerate(times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            cls, body = bodies[i % len(bodies)]
            tasks.append(asyncio.create_task(shoot(s, urls[i % len(urls)], cls, body, at)))
        return list(await asyncio.gather(*tasks))


async def closed_loop(
    url: str,
    workers: int,
    stop: Callable[[list[Shot]], bool],
    bodies: list[tuple[str, bytes]],
    on_shot: Callable[[Shot], None] = lambda shot: None,
) -> list[Shot]:
    """``workers`` clients each sending their next request when the last one ended, until ``stop``."""
    shots: list[Shot] = []
    async with session() as s:

        async def worker(n: int) -> None:
            i = n
            while not stop(shots):
                cls, body = bodies[i % len(bodies)]
                shot = await shoot(s, url, cls, body)
                shots.append(shot)
                on_shot(shot)
                i += workers

        await asyncio.gather(*(worker(n) for n in range(workers)))
    return shots


async def scrape(url: str) -> dict[str, float]:
    """Fluido's /metrics as {sample name with labels: value}."""
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as resp:
        text = await resp.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def fake_stats(fake: str, reset: dict[str, Any] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        if reset is not None:
            async with s.post(fake + "/_fake/config", json=reset) as resp:
                return dict(orjson.loads(await resp.read()))
        async with s.get(fake + "/_fake/stats") as resp:
            return dict(orjson.loads(await resp.read()))
