"""What an upstream says about its own capacity and queue, read in the background (never per request).

- llama.cpp's server: ``GET /props`` ``total_slots`` seeds L and caps it; ``GET /metrics`` (when started
  with ``--metrics``) ``llamacpp:requests_deferred`` is its queue.
- vLLM: ``GET /metrics`` ``vllm:num_requests_waiting`` is its queue.
- Ollama exposes neither: L is learned from TTFT alone.

While the upstream reports requests waiting in its own queue, L does not grow; while it reports none, a
slow TTFT is not taken for queueing there. A failed read means "it did not say": TTFT alone guards L.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import orjson
import structlog

log = structlog.get_logger("fluido.buffer")

QUEUE_GAUGES = ("vllm:num_requests_waiting", "llamacpp:requests_deferred")
PROPS_EVERY = 20  # polls between two reads of /props (a restarted server may have new slots)


def queued(metrics_text: str) -> int | None:
    """The upstream's waiting requests from its Prometheus text (summed over label sets), if it says."""
    total, found = 0.0, False
    for line in metrics_text.splitlines():
        if line.startswith(QUEUE_GAUGES):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
                found = True
    return int(total) if found else None


def root_of(url: str) -> str:
    """The server's root from an OpenAI-compatible base URL (``.../v1``)."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


class Signals:
    """Polls one OpenAI-compatible upstream; calls ``on_slots(n)`` and ``on_queue(waiting)`` (None: it
    did not say, or could not be read)."""

    def __init__(
        self,
        url: str,
        interval: float,
        on_slots: Callable[[int], None],
        on_queue: Callable[[int | None], None],
        timeout: float = 1.0,
    ) -> None:
        self.root = root_of(url)
        self.interval = interval
        self.on_slots = on_slots
        self.on_queue = on_queue
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.has_metrics = True

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            polls = 0
            while True:
                if polls % PROPS_EVERY == 0:
                    await self._props(session)
                if self.has_metrics:
                    await self._metrics(session)
                polls += 1
                await asyncio.sleep(self.interval)

    async def _props(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.root + "/props") as resp:
                if resp.status != 200:
                    return
                body = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return
        slots = body.get("total_slots") if isinstance(body, dict) else None
        if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0:
            self.on_slots(slots)

    async def _metrics(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.root + "/metrics") as resp:
                if resp.status in (404, 501):
                    self.has_metrics = False  # llama.cpp without --metrics: rely on TTFT
                    log.info("buffer_no_upstream_metrics", url=self.root)
                    self.on_queue(None)
                    return
                text = (await resp.read()).decode(errors="replace") if resp.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            text = ""
        self.on_queue(queued(text))
