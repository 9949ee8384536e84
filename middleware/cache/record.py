"""Cached replies: what is stored, and how it becomes a reply again, streamed or not.

A record keeps every choice whole (content, reasoning, tool calls, finish reason), the usage, and, when
the reply was streamed, its pieces in their original order and sizes, so that a replayed stream looks
like the original one to a client that accumulates it. Stream and non-stream requests can hit each other's
records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.types import Choice, Chunk, Completion, Message, Stream, ToolCall, ToolCallDelta, Usage

VERSION = 1


class CorruptRecord(Exception):
    """A stored value that cannot be read back: treated as a miss, and removed."""


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [id, name, arguments]
    finish: str | None = None


class Recorder:
    """Collects a stream's chunks as they pass, into a record once the stream has finished normally."""

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.pieces: list[list[Any]] = []
        self.usage: Usage | None = None

    def add(self, chunk: Chunk) -> None:
        content = chunk.content
        if (
            content
            and chunk.usage is None
            and chunk.reasoning is None
            and not chunk.tool_calls
            and chunk.finish_reason is None
            and chunk.index in self.choices
        ):
            # Most chunks are one token of content for a choice already seen: what the walk below does.
            self.choices[chunk.index].content.append(content)
            self.pieces.append([chunk.index, content, None, []])
            return
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not chunk.carries_output:
            return
        choice = self.choices.setdefault(chunk.index, _Choice())
        if chunk.content:
            choice.content.append(chunk.content)
        if chunk.reasoning:
            choice.reasoning.append(chunk.reasoning)
        for t in chunk.tool_calls:
            call = choice.calls.setdefault(t.index, ["", "", ""])
            call[0], call[1] = t.id or call[0], t.name or call[1]
            call[2] += t.arguments
        if chunk.finish_reason is not None:
            choice.finish = chunk.finish_reason
        if chunk.content or chunk.reasoning or chunk.tool_calls:
            calls = [[t.index, t.id, t.name, t.arguments] for t in chunk.tool_calls]
            self.pieces.append([chunk.index, chunk.content, chunk.reasoning, calls])

    @property
    def complete(self) -> bool:
        return bool(self.choices) and all(c.finish is not None for c in self.choices.values())

    def encode(self) -> bytes:
        choices = [
            {
                "index": index,
                "content": "".join(c.content) if c.content or not c.calls else None,
                "reasoning": "".join(c.reasoning) or None,
                "tool_calls": [c.calls[i] for i in sorted(c.calls)],
                "finish_reason": c.finish,
            }
            for index, c in sorted(self.choices.items())
        ]
        return _dump(choices, self.usage, self.pieces)


def encode_completion(completion: Completion) -> bytes:
    choices = [
        {
            "index": c.index,
            "content": c.message.content if isinstance(c.message.content, str) else None,
            "reasoning": c.message.reasoning_content,
            "tool_calls": [[t.id, t.name, t.arguments] for t in c.message.tool_calls],
            "finish_reason": c.finish_reason,
        }
        for c in completion.choices
    ]
    return _dump(choices, completion.usage, None)


def _dump(choices: list[dict[str, Any]], usage: Usage | None, pieces: list[list[Any]] | None) -> bytes:
    body = {"v": VERSION, "choices": choices, "pieces": pieces}
    body["usage"] = [usage.prompt_tokens, usage.completion_tokens] if usage else None
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class Record:
    choices: tuple[dict[str, Any], ...]
    usage: Usage | None
    pieces: tuple[list[Any], ...] | None


def decode(raw: bytes) -> Record:
    try:
        body = orjson.loads(raw)
        if body["v"] != VERSION or not body["choices"]:
            raise CorruptRecord("unknown record version")
        usage = Usage(*body["usage"]) if body["usage"] else None
        pieces = tuple(body["pieces"]) if body["pieces"] is not None else None
        return Record(tuple(body["choices"]), usage, pieces)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(str(exc)) from None


def completion_of(record: Record) -> Completion:
    choices = tuple(
        Choice(
            index=c["index"],
            message=Message(
                role="assistant",
                content=c["content"],
                tool_calls=tuple(ToolCall(*call) for call in c["tool_calls"]),
                reasoning_content=c["reasoning"],
            ),
            finish_reason=c["finish_reason"],
        )
        for c in record.choices
    )
    return Completion(choices=choices, usage=record.usage)


async def replay(record: Record) -> Stream:
    """The record as a stream: its original pieces (or one piece per choice), finishes, then usage."""
    if record.pieces is not None:
        for index, content, reasoning, calls in record.pieces:
            deltas = tuple(ToolCallDelta(i, call_id, name, args) for i, call_id, name, args in calls)
            yield Chunk(index=index, content=content, reasoning=reasoning, tool_calls=deltas)
    else:
        for c in record.choices:
            deltas = tuple(ToolCallDelta(i, *call) for i, call in enumerate(c["tool_calls"]))
            yield Chunk(index=c["index"], content=c["content"], reasoning=c["reasoning"], tool_calls=deltas)
    for c in record.choices:
        yield Chunk(index=c["index"], finish_reason=c["finish_reason"])
    if record.usage is not None:
        yield Chunk(usage=record.usage)
