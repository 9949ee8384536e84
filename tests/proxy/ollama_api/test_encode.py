"""Normalized replies -> Ollama's objects and NDJSON lines, with its statistics."""

from __future__ import annotations

import orjson
import pytest

from proxy.errors import UpstreamError
from proxy.ollama_api.encode import OllamaEncoder, loaded, statistics
from proxy.types import Choice, Chunk, Completion, Message, ToolCall, ToolCallDelta, Usage

OLLAMA_META = {"load_duration_ms": 2.0, "prompt_eval_duration_ms": 3.0, "eval_duration_ms": 5.0,
               "total_duration_ms": 11.0}  # fmt: skip


def lines(data: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_reported_durations_win_and_are_nanoseconds() -> None:
    stats = statistics(Usage(7, 3), OLLAMA_META, started=0.0, first=0.5, now=2.0)
    assert stats == {
        "total_duration": 11_000_000, "load_duration": 2_000_000, "prompt_eval_count": 7,
        "prompt_eval_duration": 3_000_000, "eval_count": 3, "eval_duration": 5_000_000,
    }  # fmt: skip
    assert list(stats) == [  # Ollama's order
        "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
        "eval_duration",
    ]  # fmt: skip


def test_measured_durations_stand_in_and_unknown_counts_stay_absent() -> None:
    stats = statistics(None, {}, started=10.0, first=10.25, now=11.0)
    assert stats == {"total_duration": 1_000_000_000, "prompt_eval_duration": 250_000_000,
                     "eval_duration": 750_000_000}  # fmt: skip
    assert statistics(None, {}, started=10.0, first=None, now=11.0) == {"total_duration": 1_000_000_000}


def test_a_chat_stream_is_message_lines_then_one_done_line() -> None:
    enc = OllamaEncoder("chat:latest", generate=False, started=0.0)
    out = enc.render(Chunk(role="assistant", content="Hel"), 0.1) + enc.render(Chunk(content="lo"), 0.2)
    out += enc.render(Chunk(finish_reason="length"), 0.3) + enc.render(Chunk(usage=Usage(4, 2)), 0.3)
    out += enc.done(0.4)
    parsed = lines(out)
    assert [p["message"]["content"] for p in parsed] == ["Hel", "lo", ""]  # type: ignore[index]
    assert [p["done"] for p in parsed] == [False, False, True]
    last = parsed[-1]
    assert last["model"] == "chat:latest" and last["done_reason"] == "length"
    assert last["prompt_eval_count"] == 4 and last["eval_count"] == 2


def test_a_generate_stream_says_response_and_thinking() -> None:
    enc = OllamaEncoder("chat", generate=True, started=0.0)
    parsed = lines(
        enc.render(Chunk(reasoning="hmm"), 0.1) + enc.render(Chunk(content="yes"), 0.2) + enc.done(0.3)
    )
    assert parsed[0] == {**parsed[0], "response": "", "thinking": "hmm", "done": False}
    assert parsed[1]["response"] == "yes" and "message" not in parsed[1]
    assert parsed[2]["done"] is True and parsed[2]["response"] == ""


def test_streamed_tool_call_fragments_go_out_whole_with_object_arguments() -> None:
    enc = OllamaEncoder("chat", generate=False, started=0.0)
    out = enc.render(Chunk(tool_calls=(ToolCallDelta(0, id="call_1", name="weather"),)), 0.1)
    out += enc.render(Chunk(tool_calls=(ToolCallDelta(0, arguments='{"city": '),)), 0.1)
    out += enc.render(Chunk(tool_calls=(ToolCallDelta(0, arguments='"Paris"}'),)), 0.1)
    out += enc.render(Chunk(tool_calls=(ToolCallDelta(1, id="call_2", name="clock", arguments="{}"),)), 0.1)
    assert out == b""  # nothing until the calls are complete
    parsed = lines(enc.render(Chunk(finish_reason="tool_calls"), 0.2) + enc.done(0.3))
    calls = parsed[0]["message"]["tool_calls"]  # type: ignore[index]
    assert calls == [
        {"id": "call_1", "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}}},
        {"id": "call_2", "function": {"index": 1, "name": "clock", "arguments": {}}},
    ]
    assert parsed[1]["done"] is True and parsed[1]["done_reason"] == "stop"


def test_arguments_that_are_not_an_object_are_an_upstream_error() -> None:
    enc = OllamaEncoder("chat", generate=False, started=0.0)
    enc.render(Chunk(tool_calls=(ToolCallDelta(0, id="c", name="f", arguments="{broken"),)), 0.1)
    with pytest.raises(UpstreamError, match="not a JSON object"):
        enc.done(0.2)


def test_a_completion_is_one_done_object() -> None:
    message = Message("assistant", "hi", tool_calls=(ToolCall("c1", "f", '{"x": 1}'),), reasoning_content="r")
    completion = Completion((Choice(0, message, "tool_calls"),), Usage(5, 1), OLLAMA_META)
    body = orjson.loads(OllamaEncoder("chat", generate=False, started=0.0).completion(completion, 1.0))
    assert body["message"] == {
        "role": "assistant", "content": "hi", "thinking": "r",
        "tool_calls": [{"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"x": 1}}}],
    }  # fmt: skip
    assert body["done"] is True and body["done_reason"] == "stop" and body["eval_count"] == 1
    assert body["total_duration"] == 11_000_000


def test_load_and_unload_acknowledgements() -> None:
    assert orjson.loads(loaded("chat", generate=False, unload=False))["done_reason"] == "load"
    body = orjson.loads(loaded("chat", generate=True, unload=True))
    assert body["done_reason"] == "unload" and body["response"] == "" and body["done"] is True
