"""How a chat route writes a stream: every write is a system call, so frames with nothing to show (the
role, usage) wait for one that has, or for the end; a frame with output is written as soon as the stream has
to wait for more, the finish included, so an upstream that stalls after it holds back nothing; chunks at
hand together (one read from the upstream) leave in one write; what the client reads is unchanged."""

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


async def writes(
    *chunks: Chunk, fail: bool = False, before_end: list[bytes] | None = None, apart: bool = True
) -> list[bytes]:
    """The body of every write of a streamed reply of ``chunks`` (then an upstream error, if ``fail``).
    ``apart``: the stream waits before each chunk and before its end, as for an upstream's next event;
    else every chunk is at hand at once. ``before_end`` gets what was written while the stream waited
    after its last chunk."""

    async def chain(call: Call) -> Reply:
        async def stream() -> Any:
            for chunk in chunks:
                if apart:
                    await asyncio.sleep(0)
                yield chunk
            if apart:
                await asyncio.sleep(0)
            if before_end is not None:
                before_end.append(b"".join(m.get("body", b"") for m in messages))
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


async def test_the_role_leaves_with_the_first_text_and_usage_with_the_done() -> None:
    out = await writes(ROLE, Chunk(content="Hel"), Chunk(content="lo"), Chunk(finish_reason="stop"), USAGE)
    assert [len(events(body)) for body in out] == [2, 1, 1, 2]
    role, hel, lo, finish, usage, done = [e for body in out for e in events(body)]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert hel["choices"][0]["delta"] == {"content": "Hel"} and lo["choices"][0]["delta"] == {"content": "lo"}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["total_tokens"] == 5 and done == b"[DONE]"


async def test_every_text_and_the_finish_are_written_as_they_come() -> None:
    texts = [Chunk(content=t) for t in ("a", "b", "c")]
    out = await writes(*texts, Chunk(finish_reason="stop"))
    assert [len(events(body)) for body in out] == [1, 1, 1, 1, 1]  # the first text announces the role too
    assert events(out[-1]) == [b"[DONE]"]


async def test_the_last_text_is_written_before_the_upstream_ends_the_stream() -> None:
    """An upstream that stalls after its finish would otherwise hold the last text until it ends."""
    before_end: list[bytes] = []
    out = await writes(ROLE, Chunk(content="last", finish_reason="stop"), USAGE, before_end=before_end)
    assert b'"last"' in before_end[0] and b'"finish_reason":"stop"' in before_end[0]
    assert b"[DONE]" not in before_end[0] and events(out[-1])[-1] == b"[DONE]"
    positive_control: list[bytes] = []
    await writes(ROLE, USAGE, before_end=positive_control)
    assert b"total_tokens" not in positive_control[0], "frames without output still wait for the end"


async def test_a_stream_that_fails_after_its_finish_still_ends_with_one_error_event() -> None:
    out = await writes(ROLE, Chunk(content="hi"), Chunk(finish_reason="stop"), fail=True)
    assert events(out[-2])[0]["choices"][0]["finish_reason"] == "stop"
    last = events(out[-1])
    assert last[0]["error"]["type"] == "upstream_error" and len(last) == 1
    assert all(e != b"[DONE]" for body in out for e in events(body))


async def test_chunks_at_hand_together_leave_in_one_write() -> None:
    """Events that came in one read from the upstream: the route does not write them one by one."""
    chunks = (ROLE, Chunk(content="a"), Chunk(content="b"), Chunk(finish_reason="stop"), USAGE)
    together = await writes(*chunks, apart=False)
    assert [len(events(body)) for body in together] == [6]
    apart = await writes(*chunks)  # positive control: the same chunks, each after a wait
    assert [len(events(body)) for body in apart] == [2, 1, 1, 2]

    def shown(out: list[bytes]) -> list[Any]:  # what the client reads, without each reply's own id
        return [e if isinstance(e, bytes) else (e["choices"], e.get("usage")) for b in out for e in events(b)]

    assert shown(together) == shown(apart)
