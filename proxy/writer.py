"""Normalized replies -> OpenAI's wire format: a chat.completion object, or chat.completion.chunk SSE."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import FluidoError
from proxy.types import Chunk, Completion, Message, ToolCall, ToolCallDelta, Usage

DONE = b"data: [DONE]\n\n"
# A chunk carrying only content, as orjson renders the general form (prefix, index, content, usage frame).
_CONTENT_FRAME = b'%s[{"index":%d,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}\n\n%s'


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def tool_calls_body(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's wire shape (arguments as a JSON string)."""
    return [
        {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
        for t in calls
    ]


def message_body(m: Message) -> dict[str, Any]:
    """A request message in OpenAI's wire shape, extras included: what the upstream and the cache key see."""
    body: dict[str, Any] = {**m.extra, "role": m.role, "content": m.content}
    if m.name is not None:
        body["name"] = m.name
    if m.tool_calls:
        body["tool_calls"] = tool_calls_body(m.tool_calls)
    if m.tool_call_id is not None:
        body["tool_call_id"] = m.tool_call_id
    if m.reasoning_content is not None:
        body["reasoning_content"] = m.reasoning_content
    return body


def _message(m: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        body["tool_calls"] = tool_calls_body(m.tool_calls)
    if m.reasoning_content is not None:
        body["reasoning_content"] = m.reasoning_content
    return body


def completion_json(completion: Completion, *, id: str, created: int, model: str) -> bytes:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c.message),
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            }
            for c in completion.choices
        ],
    }
    if completion.usage is not None:
        body["usage"] = usage_body(completion.usage)
    return orjson.dumps(body)


def _tool_call(t: ToolCallDelta) -> dict[str, Any]:
    if t.id is None and t.name is None:
        return {"index": t.index, "function": {"arguments": t.arguments}}
    return {
        "index": t.index,
        "id": t.id,
        "type": "function",
        "function": {"name": t.name, "arguments": t.arguments},
    }


class SSEWriter:
    """Renders one stream's chunks as SSE frames; remembers which choices already announced their role."""

    __slots__ = ("_include_usage", "_prefix", "_started")

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        # Everything before "choices" is the same in every chunk of a stream: render it once.
        head = orjson.dumps({"id": id, "object": "chat.completion.chunk", "created": created, "model": model})
        self._prefix = b"data: " + head[:-1] + b',"choices":'
        self._include_usage = include_usage
        self._started: set[int] = set()

    def done(self) -> bytes:
        """The frame that ends a stream the upstream finished."""
        return DONE

    def render(self, chunk: Chunk) -> bytes:
        """The SSE frames for one chunk, as one write: empty for a usage chunk the client did not ask for."""
        usage = b""
        if chunk.usage is not None:
            if self._include_usage:
                usage = self._prefix + b'[],"usage":' + orjson.dumps(usage_body(chunk.usage)) + b"}\n\n"
            if not chunk.carries_output and chunk.role is None:
                return usage
        if (
            chunk.content is not None
            and chunk.role is None
            and chunk.reasoning is None
            and not chunk.tool_calls
            and chunk.finish_reason is None
            and chunk.logprobs is None
            and chunk.index in self._started
        ):
            # Most chunks are one token of content: the same bytes as below, without building dicts.
            return _CONTENT_FRAME % (self._prefix, chunk.index, orjson.dumps(chunk.content), usage)
        delta: dict[str, Any] = {}
        if chunk.index not in self._started:
            self._started.add(chunk.index)
            delta["role"] = chunk.role or "assistant"
            delta["content"] = chunk.content or ""
        elif chunk.content is not None:
            delta["content"] = chunk.content
        if chunk.reasoning is not None:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.tool_calls:
            delta["tool_calls"] = [_tool_call(t) for t in chunk.tool_calls]
        choice = {
            "index": chunk.index,
            "delta": delta,
            "logprobs": chunk.logprobs,
            "finish_reason": chunk.finish_reason,
        }
        return self._prefix + b"[" + orjson.dumps(choice) + b"]}\n\n" + usage


def error_frame(error: FluidoError) -> bytes:
    """The one event that ends a stream which failed after its first byte."""
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"
