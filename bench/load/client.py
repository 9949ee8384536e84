"""One timed chat request over aiohttp, and what it measured.

Time to first token is taken when the first event carrying generated text arrives (content, reasoning or
a tool call's arguments): not when the headers come, and not at the role-only chunk some servers send at
once. A stream counts as a success only when it ends with a ``finish_reason``; an in-band error event, a
missing ``finish_reason`` or a connection that breaks make it an error. 429 and 503 answers are "shed"
(the server said no, quickly or not: their latency is kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

OK, SHED, ERROR = "ok", "shed", "error"
# The error code of a request still running when its cell ended (after the drain): the run cut it, not the
# server, so it is counted apart from the errors.
UNFINISHED = "unfinished_at_end"
SHED_STATUSES = (429, 503)
_TEXT_FIELDS = ("content", "reasoning_content", "reasoning")


@dataclass(frozen=True, slots=True)
class Record:
    """What one request measured. Times in seconds; ``sent`` is from the start of its cell."""

    query_class: str
    sent: float
    lag: float  # how late it was sent against its schedule (open loop; 0 in a closed loop)
    status: int  # 0: no HTTP answer at all
    outcome: str  # "ok" | "shed" | "error"
    error: str  # "" when ok; else a code: the server's error code or type, or what broke
    ttft: float | None  # first generated token (streams); the whole answer otherwise
    e2e: float
    itl: tuple[float, ...]  # gaps between the events carrying tokens
    output_tokens: int
    prompt_tokens: int | None
    usage_reported: bool  # output_tokens came from the server's usage, not from counting events
    retry_after: float | None = None  # seconds a non-200 answer asked to wait (retry-after-ms, Retry-After)

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.query_class,
            "sent": round(self.sent, 6),
            "lag": round(self.lag, 6),
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
            "ttft": None if self.ttft is None else round(self.ttft, 6),
            "e2e": round(self.e2e, 6),
            "itl": [round(g, 6) for g in self.itl],
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "usage_reported": self.usage_reported,
            "retry_after": self.retry_after,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        return cls(
            d["class"],
            d["sent"],
            d["lag"],
            d["status"],
            d["outcome"],
            d["error"],
            d["ttft"],
            d["e2e"],
            tuple(d["itl"]),
            d["output_tokens"],
            d["prompt_tokens"],
            d["usage_reported"],
            d.get("retry_after"),
        )


@dataclass
class _Progress:
    """What a response showed so far (mutable while it streams)."""

    first: float = 0.0
    last: float = 0.0
    gaps: list[float] = field(default_factory=list)
    events: int = 0
    finished: bool = False
    error: str = ""
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    retry_after: float | None = None

    def token_event(self, now: float) -> None:
        if self.first:
            self.gaps.append(now - self.last)
        else:
            self.first = now
        self.last = now
        self.events += 1

    def usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)


def _error_code(status: int, raw: bytes) -> str:
    """The server's own error code or type if its body says one (OpenAI, vLLM, Ollama shapes)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"http_{status}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else err.get("type")
        return str(code) if code else f"http_{status}"
    return f"http_{status}"


def _has_token(delta: dict[str, Any]) -> bool:
    return any(delta.get(f) for f in _TEXT_FIELDS) or bool(delta.get("tool_calls"))


async def _read_stream(resp: aiohttp.ClientResponse, seen: _Progress) -> None:
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        now = time.perf_counter()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            seen.error = "malformed_event"
            return
        if not isinstance(event, dict):
            continue
        if "error" in event:
            seen.error = "stream_error_event"
            return
        for choice in event.get("choices") or ():
            if _has_token(choice.get("delta") or {}):
                seen.token_event(now)
            if choice.get("finish_reason"):
                seen.finished = True
        seen.usage(event.get("usage"))


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    stream: bool,
    query_class: str,
    sent: float,
    lag: float,
    give_up_after: float,
    timeout_code: str = "timeout",
) -> Record:
    """POST one chat body and time it. ``sent`` and ``lag`` are only carried into the Record; a request
    still running after ``give_up_after`` seconds is abandoned and recorded as ``timeout_code``."""
    seen = _Progress()
    status = 0
    start = time.perf_counter()
    try:
        async with asyncio.timeout(give_up_after):
            async with session.post(url, data=body) as resp:
                status = resp.status
                if status != 200:
                    seen.error = _error_code(status, await resp.read())
                    seen.retry_after = _retry_after(resp.headers)
                elif stream:
                    await _read_stream(resp, seen)
                    if not seen.error and not seen.finished:
                        seen.error = "no_finish_reason"
                else:
                    _read_whole(orjson.loads(await resp.read()), seen, time.perf_counter())
    except TimeoutError:
        seen.error = timeout_code
    except aiohttp.ClientConnectorError:
        seen.error = "connect_failed"
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        seen.error = "connection_cut"
    except (orjson.JSONDecodeError, aiohttp.ContentTypeError):
        seen.error = "malformed_body"
    except ValueError:  # aiohttp: a line past its size limit
        seen.error = "malformed_event"
    end = time.perf_counter()
    if status in SHED_STATUSES:
        outcome = SHED
    elif status == 200 and not seen.error:
        outcome = OK
    else:
        outcome = ERROR
        seen.error = seen.error or f"http_{status}"
    counted = seen.completion_tokens is not None
    tokens = seen.completion_tokens if seen.completion_tokens is not None else seen.events
    return Record(
        query_class=query_class,
        sent=sent,
        lag=lag,
        status=status,
        outcome=outcome,
        error=seen.error,
        ttft=(seen.first - start) if seen.first else None,
        e2e=end - start,
        itl=tuple(seen.gaps),
        output_tokens=tokens,
        prompt_tokens=seen.prompt_tokens,
        usage_reported=counted,
        retry_after=seen.retry_after,
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """OpenAI's SDKs read retry-after-ms first, then Retry-After in seconds (an HTTP date is not read)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers[name]) * scale
        except (KeyError, ValueError):
            continue
    return None


def _read_whole(body: Any, seen: _Progress, now: float) -> None:
    if not isinstance(body, dict) or not body.get("choices"):
        seen.error = "malformed_body"
        return
    seen.first = now  # a whole answer: its first token is the answer
    seen.finished = bool(body["choices"][0].get("finish_reason"))
    if not seen.finished:
        seen.error = "no_finish_reason"
    seen.usage(body.get("usage"))
