"""Clients for the load and fault tests, and how their outcomes are counted.

Every request ends in exactly one outcome:

- ``answered``: a 200 whose JSON has choices, or a stream that ended with a ``finish_reason`` and ``[DONE]``;
- ``typed``: an error in OpenAI's shape, as a non-2xx body or as the one error event that ends a stream;
- ``hang``: nothing conclusive within the request's deadline;
- ``lost``: anything else (connection dropped, a stream cut without its error event, a malformed reply).

Scale and length come from ``FLUIDO_SOAK``: unset, the short seeded versions ``make test`` runs; ``1``, the
long ones of ``make soak``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ANSWERED, TYPED, HANG, LOST = "answered", "typed", "hang", "lost"
LONG = os.environ.get("FLUIDO_SOAK") == "1"
SEED = 11


def scale(short: float, long: float) -> float:
    return long if LONG else short


def chat_body(text: str, *, stream: bool, model: str = "chat", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
    return body


def is_error_body(payload: Any) -> bool:
    err = payload.get("error") if isinstance(payload, dict) else None
    return isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)


@dataclass
class Result:
    outcome: str
    status: int = 0
    code: str = ""  # the error's code or type, or what went wrong
    started_stream: bool = False


async def read_stream(resp: aiohttp.ClientResponse, on_first: Callable[[], None] | None = None) -> Result:
    """Read an SSE reply to its end and classify it."""
    finished = False
    first = True
    try:
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                return Result(ANSWERED if finished else LOST, 200, "" if finished else "done_without_finish")
            event = orjson.loads(data)
            if is_error_body(event):
                return Result(TYPED, 200, str(event["error"].get("code") or event["error"]["type"]), True)
            for choice in event.get("choices") or []:
                if choice.get("finish_reason"):
                    finished = True
                if first and (choice.get("delta") or {}).get("content"):
                    first = False
                    if on_first is not None:
                        on_first()
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        return Result(LOST, 200, type(exc).__name__, True)
    except orjson.JSONDecodeError:
        return Result(LOST, 200, "malformed_event", True)
    return Result(LOST, 200, "ended_without_done", True)


async def request(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    *,
    within: float,
    headers: Mapping[str, str] | None = None,
) -> Result:
    """One chat request, classified; never raises and never outlives ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
                if resp.status == 200 and body.get("stream"):
                    return await read_stream(resp)
                raw = await resp.read()
                try:
                    payload = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return Result(LOST, resp.status, "not_json")
                if resp.status == 200:
                    ok = isinstance(payload, dict) and payload.get("choices")
                    return Result(ANSWERED if ok else LOST, 200)
                if is_error_body(payload):
                    return Result(
                        TYPED, resp.status, str(payload["error"].get("code") or payload["error"]["type"])
                    )
                return Result(LOST, resp.status, "untyped_error")
    except TimeoutError:
        return Result(HANG, 0, "no_answer_in_time")
    except aiohttp.ClientError as exc:
        return Result(LOST, 0, type(exc).__name__)


@dataclass
class Tally:
    """Outcomes of many requests, printable as a table row."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)

    def add(self, result: Result) -> None:
        self.outcomes[result.outcome] += 1
        if result.code:
            self.codes[f"{result.status} {result.code}"] += 1

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    def row(self) -> str:
        o = self.outcomes
        codes = ", ".join(f"{k} x{v}" for k, v in self.codes.most_common(4))
        return f"| {self.name:<34} | {self.sent:>5} | {o[ANSWERED]:>8} | {o[TYPED]:>5} | {o[HANG]:>5} | {o[LOST]:>4} | {codes}"


TABLE_HEAD = (
    f"| {'phase':<34} | {'sent':>5} | {'answered':>8} | {'typed':>5} | {'hangs':>5} | {'lost':>4} | errors\n"
    f"|{'-' * 36}|{'-' * 7}|{'-' * 10}|{'-' * 7}|{'-' * 7}|{'-' * 6}|-------"
)


def table(title: str, tallies: list[Tally]) -> str:
    return "\n".join([f"\n{title}", TABLE_HEAD, *(t.row() for t in tallies if t.sent)])


class Deadline:
    """A bounded wait: ``poll(check)`` until it holds or the time is up."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()

    async def poll(self, check: Callable[[], bool], every: float = 0.05) -> bool:
        while not check():
            if self.left <= 0:
                return False
            await asyncio.sleep(every)
        return True


def session(limit: int = 0) -> aiohttp.ClientSession:
    """A client session with no pool limit: every simulated client has its own connection."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=True))


class Load:
    """``clients`` loops sending requests until closed; each result counts in the phase it started in.

    ``body(n)`` makes the n-th request's body. Phases end on conditions (``run_phase`` waits for a number of
    results, ``recover`` for the first answer), each bounded by a deadline.
    """

    def __init__(
        self,
        url: str,
        clients: int,
        body: Callable[[int], Mapping[str, Any]],
        headers: Mapping[str, str] | None = None,
        within: float = 30.0,
    ) -> None:
        self.url = url
        self.clients = clients
        self.body = body
        self.headers = headers
        self.within = within
        self.current = Tally("start")
        self.tallies: list[Tally] = [self.current]
        self._sent = 0
        self._stop = False
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self._session = session()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        # Every request has its own deadline, so the clients end within it.
        await asyncio.wait_for(asyncio.gather(*self._tasks), self.within + 10)
        assert self._session is not None
        await self._session.close()

    async def _client(self) -> None:
        assert self._session is not None
        while not self._stop:
            self._sent += 1
            tally = self.current
            result = await request(
                self._session, self.url, self.body(self._sent), within=self.within, headers=self.headers
            )
            tally.add(result)
            if result.outcome != ANSWERED:
                await asyncio.sleep(0.05)  # a failing client retries at a human pace, not in a busy loop

    def begin(self, name: str) -> Tally:
        self.current = Tally(name)
        self.tallies.append(self.current)
        return self.current

    async def run_phase(self, name: str, results: int, limit_s: float = 60.0) -> Tally:
        tally = self.begin(name)
        assert await Deadline(limit_s).poll(lambda: tally.sent >= results), f"{name}: {tally.outcomes}"
        return tally

    async def recover(self, name: str, limit_s: float = 60.0) -> float:
        """Begin phase ``name`` and wait for its first answer; the seconds it took."""
        tally = self.begin(name)
        start = time.monotonic()
        assert await Deadline(limit_s).poll(lambda: tally.outcomes[ANSWERED] > 0), f"{name}: {tally.outcomes}"
        return time.monotonic() - start

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for t in self.tallies:
            total.update(t.outcomes)
        return total
