"""Run load cells: one (endpoint, model, load level) each, open loop or closed loop.

Open loop: requests leave at their scheduled times whatever happens to the earlier ones, so a slow server
sees its queue grow, as it would with real users. Closed loop: N workers, each sending its next request
when the previous one ended. A cell lasts ``duration`` seconds (or ``requests`` requests), then waits at
most ``drain`` seconds for the requests still running; those are recorded as "unfinished_at_end".
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .client import UNFINISHED, Record, send
from .prompts import Prompt
from .schedule import Load, arrivals


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server under test: its name in reports and its OpenAI-compatible /v1 base URL."""

    name: str
    base: str

    @property
    def chat_url(self) -> str:
        return self.base + "/chat/completions"


def normalise_base(url: str) -> str:
    """A server's root, its /v1 base or its chat URL -> the /v1 base."""
    url = url.strip().rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url + "/v1"


@dataclass(frozen=True, slots=True)
class Cell:
    """Everything measured for one (endpoint, model, load)."""

    endpoint: str
    url: str
    model: str
    load: Load
    started_at: float  # wall-clock (epoch seconds), for the record
    wall: float  # seconds from the first send to the end of the last request
    client_cpu: float  # CPU seconds the load generator spent in the cell
    records: tuple[Record, ...]

    def to_json(self) -> dict[str, Any]:
        load = {"kind": self.load.kind, "value": self.load.value, "label": self.load.label}
        return {
            "endpoint": self.endpoint,
            "url": self.url,
            "model": self.model,
            "load": load,
            "started_at": self.started_at,
            "wall": self.wall,
            "client_cpu": self.client_cpu,
            "records": [r.to_json() for r in self.records],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        load = Load(d["load"]["kind"], d["load"]["value"], d["load"].get("label", ""))
        records = tuple(Record.from_json(r) for r in d["records"])
        return cls(
            d["endpoint"], d["url"], d["model"], load, d["started_at"], d["wall"], d["client_cpu"], records
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """How every cell runs (from the command line)."""

    duration: float | None
    requests: int | None
    drain: float
    timeout: float
    seed: int
    burstiness: float
    stream: bool
    include_usage: bool


class Runner:
    """Runs cells against endpoints with one keep-alive connection pool per endpoint."""

    def __init__(
        self,
        settings: Settings,
        prompts: list[Prompt],
        headers: dict[str, str],
        on_record: Callable[[Record], None] | None = None,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self.headers = {"Content-Type": "application/json", **headers}
        self.on_record = on_record

    def body(self, index: int, model: str) -> tuple[str, bytes]:
        prompt = self.prompts[index % len(self.prompts)]
        body: dict[str, Any] = {**prompt.body, "model": model}
        if self.settings.stream:
            body["stream"] = True
            if self.settings.include_usage:
                body["stream_options"] = {"include_usage": True}
        return prompt.query_class, orjson.dumps(body)

    def planned_requests(self, load: Load) -> int | None:
        """How many requests a cell will send, when that is known up front (for the progress bar)."""
        if load.open_loop:
            return len(self._arrivals(load))
        return self.settings.requests

    def _arrivals(self, load: Load) -> list[float]:
        s = self.settings
        return arrivals(load.value, s.seed, duration=s.duration, count=s.requests, burstiness=s.burstiness)

    async def run(self, endpoint: Endpoint, model: str, load: Load) -> Cell:
        # No connection limit: the generator must never queue requests itself, the server under test does.
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            connector=connector, headers=self.headers, timeout=timeout
        ) as session:
            started_at, cpu0, t0 = time.time(), time.process_time(), time.perf_counter()
            if load.open_loop:
                records = await self._open(session, endpoint, model, load, t0)
            else:
                records = await self._closed(session, endpoint, model, int(load.value), t0)
            wall = max((r.sent + r.e2e for r in records), default=time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
        records.sort(key=lambda r: r.sent)
        return Cell(endpoint.name, endpoint.base, model, load, started_at, wall, cpu, tuple(records))

    async def _one(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        model: str,
        index: int,
        t0: float,
        lag: float,
        end: float,
    ) -> Record:
        query_class, body = self.body(index, model)
        now = time.perf_counter()
        left = end - now
        code = "timeout" if self.settings.timeout <= left else UNFINISHED
        record = await send(
            session,
            endpoint.chat_url,
            body,
            stream=self.settings.stream,
            query_class=query_class,
            sent=now - t0,
            lag=lag,
            give_up_after=max(min(self.settings.timeout, left), 0.001),
            timeout_code=code,
        )
        if self.on_record is not None:
            self.on_record(record)
        return record

    def _end(self, t0: float, last_send: float) -> float:
        return t0 + last_send + self.settings.drain

    async def _open(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, model: str, load: Load, t0: float
    ) -> list[Record]:
        times = self._arrivals(load)
        end = self._end(t0, times[-1] if times else 0.0)
        tasks = []
        for index, at in enumerate(times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = time.perf_counter() - t0 - at
            tasks.append(asyncio.create_task(self._one(session, endpoint, model, index, t0, lag, end)))
        return list(await asyncio.gather(*tasks))

    async def _closed(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, model: str, workers: int, t0: float
    ) -> list[Record]:
        s = self.settings
        stop_at = t0 + s.duration if s.duration is not None else float("inf")
        end = stop_at + s.drain if s.duration is not None else float("inf")
        counter = itertools.count()
        records: list[Record] = []

        async def worker() -> None:
            while True:
                index = next(counter)
                if (s.requests is not None and index >= s.requests) or time.perf_counter() >= stop_at:
                    return
                records.append(await self._one(session, endpoint, model, index, t0, 0.0, end))

        await asyncio.gather(*(worker() for _ in range(workers)))
        return records
