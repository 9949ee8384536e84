"""How a chat route writes a stream: every write is a system call, so frames with nothing to show wait for
one that has, and the frames after the finish leave with the end; what the client reads is unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from proxy.asgi import BodyLimits
from proxy.door import ChatRoute
from proxy.errors import UpstreamError
from proxy.routes import OpenAIChat
from proxy.types import Call, Chunk, Reply, Usage

BODY = orjson.dumps(
    {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
)
ROLE = Chunk(role="assistant", content="")
USAGE = Chunk(usage=Usage(3, 2))


async def writes(*chunks: Chunk, fail: bool = False) -> list[bytes]:
    """The body of every write of a streamed reply of ``chunks`` (then an upstream error, if ``fail``)."""

    async def chain(call: Call) -> Reply:
        async def stream() -> Any:
            for chunk in chunks:
                yield chunk
            if fail:
                raise UpstreamError("The upstream failed mid-stream.")

        return stream()  # type: ignore[no-any-return]

    messages: list[dict[str, Any]] = []
    received = [{"type": "http.request", "body": BODY, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop()
        await never.wait()  # the client stays: only the disconnect watch waits here
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await ChatRoute(OpenAIChat(), chain, BodyLimits(1 << 20, None))(scope, receive, send)  # type: ignore[arg-type]
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
    assert [m.get("more_body", False) for m in messages[1:]] == [True] * (len(messages) - 2) + [False]
    return [m["body"] for m in messages[1:]]


def events(body: bytes) -> list[Any]:
    return [
        line[6:] if line == b"data: [DONE]" else orjson.loads(line[6:])
        for line in body.split(b"\n\n")
        if line.startswith(b"data: ")
    ]


async def test_the_role_leaves_with_the_first_text_and_the_finish_usage_and_done_in_one_write() -> None:
    out = await writes(ROLE, Chunk(content="Hel"), Chunk(content="lo"), Chunk(finish_reason="stop"), USAGE)
    assert [len(events(body)) for body in out] == [2, 1, 3]
    role, hel, lo, finish, usage, done = [e for body in out for e in events(body)]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert hel["choices"][0]["delta"] == {"content": "Hel"} and lo["choices"][0]["delta"] == {"content": "lo"}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["total_tokens"] == 5 and done == b"[DONE]"


async def test_every_text_is_written_as_it_comes_while_the_reply_is_unfinished() -> None:
    texts = [Chunk(content=t) for t in ("a", "b", "c")]
    out = await writes(*texts, Chunk(finish_reason="stop"))
    assert [len(events(body)) for body in out] == [1, 1, 1, 2]  # the first text announces the role too


async def test_a_stream_that_fails_after_its_finish_still_ends_with_one_error_event() -> None:
    out = await writes(ROLE, Chunk(content="hi"), Chunk(finish_reason="stop"), fail=True)
    last = events(out[-1])
    assert last[0]["choices"][0]["finish_reason"] == "stop"
    assert last[1]["error"]["type"] == "upstream_error" and len(last) == 2
    assert all(e != b"[DONE]" for body in out for e in events(body))
