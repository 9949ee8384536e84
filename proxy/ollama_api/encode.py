"""Replies -> Ollama's wire shapes: one JSON object, or NDJSON lines whose last says ``done: true``.

The final object carries Ollama's statistics: durations in nanoseconds as the upstream reported them (an
Ollama upstream reports all four), else as Fluido measured them (total, time to first output, time after
it); token counts only when the upstream reported usage. Nothing unknown is filled in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.types import JSON, Chunk, Completion, Message, ToolCallDelta, Usage

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def done_reason(finish_reason: str | None) -> str:
    # Ollama knows "stop" and "length"; after a tool call it says "stop" too.
    return "length" if finish_reason == "length" else "stop"


def statistics(
    usage: Usage | None, meta: Mapping[str, JSON], started: float, first: float | None, now: float
) -> dict[str, int]:
    """Ollama's final-object statistics, in its order; what neither side knows stays absent."""
    measured = {"total_duration": now - started}
    if first is not None:
        measured["prompt_eval_duration"] = first - started
        measured["eval_duration"] = now - first
    durations: dict[str, int] = {}
    for key in _DURATIONS:
        reported = meta.get(f"{key}_ms")
        if isinstance(reported, int | float) and not isinstance(reported, bool):
            durations[key] = round(reported * _NS_PER_MS)
        elif key in measured:
            durations[key] = round(max(measured[key], 0) * _NS_PER_S)
    out: dict[str, int] = {}
    for key in ("total_duration", "load_duration"):
        if key in durations:
            out[key] = durations[key]
    if usage is not None:
        out["prompt_eval_count"] = usage.prompt_tokens
    if "prompt_eval_duration" in durations:
        out["prompt_eval_duration"] = durations["prompt_eval_duration"]
    if usage is not None:
        out["eval_count"] = usage.completion_tokens
    if "eval_duration" in durations:
        out["eval_duration"] = durations["eval_duration"]
    return out


def tool_call_body(index: int, call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    """One tool call as Ollama sends it: whole, with its arguments as an object."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"The model called '{name}' with arguments that are not a JSON object.")
    body: dict[str, Any] = {"function": {"index": index, "name": name, "arguments": parsed}}
    if call_id:
        body["id"] = call_id
    return body


def _text(content: str | list[JSON] | None) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content or ""


class OllamaEncoder:
    """Renders one reply for ``/api/chat`` (a ``message``) or ``/api/generate`` (a ``response``)."""

    __slots__ = ("_calls", "finish", "first", "generate", "meta", "name", "started", "usage")

    def __init__(self, name: str, *, generate: bool, started: float) -> None:
        self.name = name
        self.generate = generate
        self.started = started  # monotonic time the request arrived
        self.first: float | None = None  # monotonic time of the first output
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.meta: dict[str, JSON] = {}
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]

    def _piece(
        self, content: str | None, reasoning: str | None, calls: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.name, "created_at": created_at()}
        if self.generate:
            body["response"] = content or ""
            if reasoning:
                body["thinking"] = reasoning
            return body
        message: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if reasoning:
            message["thinking"] = reasoning
        if calls:
            message["tool_calls"] = calls
        body["message"] = message
        return body

    def completion(self, completion: Completion, now: float | None = None) -> bytes:
        choice = completion.choices[0]
        m: Message = choice.message
        calls = [tool_call_body(i, t.id, t.name, t.arguments) for i, t in enumerate(m.tool_calls)]
        body = self._piece(_text(m.content), m.reasoning_content, calls)
        body["done"] = True
        body["done_reason"] = done_reason(choice.finish_reason)
        now = time.monotonic() if now is None else now
        body.update(statistics(completion.usage, completion.meta, self.started, None, now))
        return orjson.dumps(body)

    def render(self, chunk: Chunk, now: float | None = None) -> bytes:
        """The line for one chunk; nothing for the chunks that only carry bookkeeping. ``now``: the monotonic
        time, if not now (tests)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.meta:
            self.meta.update(chunk.meta)
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
        if chunk.tool_calls:
            self._collect(chunk.tool_calls)
        if self.first is None and (chunk.content or chunk.reasoning or chunk.tool_calls):
            self.first = now if now is not None else time.monotonic()
        if not (chunk.content or chunk.reasoning):
            return b""  # tool calls go out whole, at the end, as Ollama sends them
        return self._line(chunk.content, chunk.reasoning, None)

    def _line(self, content: str | None, reasoning: str | None, calls: list[dict[str, Any]] | None) -> bytes:
        body = self._piece(content, reasoning, calls)
        body["done"] = False
        return orjson.dumps(body) + b"\n"

    def _collect(self, deltas: tuple[ToolCallDelta, ...]) -> None:
        for d in deltas:
            call = self._calls.setdefault(d.index, [None, "", []])
            if d.id:
                call[0] = d.id
            if d.name:
                call[1] = d.name
            call[2].append(d.arguments)

    def done(self, now: float | None = None) -> bytes:
        """The last lines of a stream that finished: its tool calls, if any, then the statistics."""
        lines = b""
        if self._calls:
            calls = [
                tool_call_body(i, call_id, name, "".join(pieces))
                for i, (call_id, name, pieces) in enumerate(self._calls[k] for k in sorted(self._calls))
            ]
            lines = self._line("", None, calls)
        body = self._piece("", None, None)
        body["done"] = True
        body["done_reason"] = done_reason(self.finish)
        now = time.monotonic() if now is None else now
        body.update(statistics(self.usage, self.meta, self.started, self.first, now))
        return lines + orjson.dumps(body) + b"\n"


def loaded(name: str, *, generate: bool, unload: bool) -> bytes:
    """The answer to a request with nothing to generate: Ollama's load (or unload) acknowledgement."""
    body: dict[str, Any] = {"model": name, "created_at": created_at()}
    if generate:
        body["response"] = ""
    else:
        body["message"] = {"role": "assistant", "content": ""}
    body["done_reason"] = "unload" if unload else "load"
    body["done"] = True
    return orjson.dumps(body)
