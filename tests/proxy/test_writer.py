from __future__ import annotations

import orjson

from proxy.errors import UpstreamTimeout
from proxy.types import Choice, Chunk, Completion, Message, ToolCall, ToolCallDelta, Usage
from proxy.writer import SSEWriter, completion_json, error_frame


def frames(writer: SSEWriter, *chunks: Chunk) -> list[dict[str, object]]:
    out = []
    for chunk in chunks:
        for frame in writer.render(chunk).split(b"\n\n")[:-1]:
            assert frame.startswith(b"data: ")
            out.append(orjson.loads(frame[6:]))
    return out


def writer(include_usage: bool = False) -> SSEWriter:
    return SSEWriter(id="chatcmpl-1", created=1, model="chat", include_usage=include_usage)


def test_the_first_delta_of_each_choice_announces_the_assistant_role() -> None:
    out = frames(writer(), Chunk(content="a"), Chunk(content="b"), Chunk(index=1, content="c"))
    deltas = [o["choices"][0]["delta"] for o in out]  # type: ignore[index]
    assert deltas == [
        {"role": "assistant", "content": "a"},
        {"content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    assert all(o["id"] == "chatcmpl-1" and o["object"] == "chat.completion.chunk" for o in out)


def test_usage_is_sent_only_when_the_client_asked() -> None:
    usage = Chunk(usage=Usage(3, 4))
    assert frames(writer(False), usage) == []
    (frame,) = frames(writer(True), usage)
    assert frame["choices"] == [] and frame["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


def test_a_tool_call_keeps_id_type_and_name_on_its_first_delta_only() -> None:
    out = frames(
        writer(),
        Chunk(tool_calls=(ToolCallDelta(index=0, id="call_1", name="f", arguments=""),)),
        Chunk(tool_calls=(ToolCallDelta(index=0, arguments='{"a":'),)),
    )
    first, second = (o["choices"][0]["delta"]["tool_calls"][0] for o in out)  # type: ignore[index]
    assert first == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert second == {"index": 0, "function": {"arguments": '{"a":'}}


def test_reasoning_travels_as_reasoning_content() -> None:
    (frame,) = frames(writer(), Chunk(reasoning="hmm"))
    assert frame["choices"][0]["delta"]["reasoning_content"] == "hmm"  # type: ignore[index]


def test_completion_json_is_an_openai_chat_completion() -> None:
    message = Message(role="assistant", content=None, tool_calls=(ToolCall("call_1", "f", "{}"),))
    body = orjson.loads(
        completion_json(
            Completion(choices=(Choice(0, message, "tool_calls"),), usage=Usage(1, 2)),
            id="x",
            created=5,
            model="m",
        )
    )
    assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] == 3
    assert body["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_a_completion_without_usage_reports_none_rather_than_zeros() -> None:
    choice = Choice(0, Message(role="assistant", content="hi"), "stop")
    assert "usage" not in orjson.loads(
        completion_json(Completion(choices=(choice,)), id="x", created=5, model="m")
    )


def test_the_error_frame_is_an_openai_error_object() -> None:
    frame = error_frame(UpstreamTimeout("stalled"))
    assert orjson.loads(frame[6:]) == {
        "error": {"message": "stalled", "type": "upstream_error", "param": None, "code": "upstream_timeout"}
    }


def test_a_content_chunk_renders_byte_for_byte_as_the_general_form() -> None:
    """Content-only chunks take a shortcut; its bytes must be orjson's rendering of the full choice."""
    w = writer(include_usage=True)
    w.render(Chunk(role="assistant", content=""))
    for chunk in (Chunk(content='a "quoted"\nline é 😀'), Chunk(content=""), Chunk(index=0, content="x")):
        choice = {"index": 0, "delta": {"content": chunk.content}, "logprobs": None, "finish_reason": None}
        head = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"chat",'
        assert w.render(chunk) == head + b'"choices":[' + orjson.dumps(choice) + b"]}\n\n"
    with_usage = w.render(Chunk(content="y", usage=Usage(1, 2)))
    assert [orjson.loads(f[6:])["choices"] for f in with_usage.split(b"\n\n")[:-1]] == [
        [{"index": 0, "delta": {"content": "y"}, "logprobs": None, "finish_reason": None}],
        [],
    ]
