"""Whatever an Ollama client sends, the door answers a 400 or 404 naming the problem, or a valid request:
never an exception of another kind (a 500). Whatever chunks arrive, every line the encoder writes is JSON."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import FluidoError
from proxy.ollama_api.decode import parse_chat, parse_embed, parse_generate
from proxy.ollama_api.encode import OllamaEncoder
from proxy.types import Chunk, ToolCallDelta, Usage

ALIASES = {"chat"}
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
KEYS = ["model", "messages", "prompt", "system", "images", "stream", "format", "options", "keep_alive", "think",
        "tools", "raw", "template", "context", "suffix", "input", "role", "content", "tool_calls", "tool_name",
        "thinking", "num_predict", "temperature", "seed", "stop", "function", "arguments", "name"]  # fmt: skip
known = st.sampled_from(KEYS)
message = st.dictionaries(
    known, values | st.sampled_from(["user", "assistant", "tool", "system"]), max_size=5
)
body = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "chat:latest", "nope", ""]) | values},
    optional={
        "messages": st.lists(message, max_size=3) | values,
        "prompt": st.text(max_size=10) | values,
        "options": st.dictionaries(known, values, max_size=4) | values,
        **{key: values for key in KEYS if key not in ("model", "messages", "prompt", "options")},
    },
)


def decodes_or_refuses(data: dict[str, Any]) -> None:
    raw = orjson.dumps(data)
    for decode in (parse_chat, parse_generate, parse_embed):
        try:
            decode(raw, ALIASES)
        except FluidoError as exc:
            assert exc.status in (400, 404), exc


@settings(max_examples=200, deadline=None)
@given(body)
def test_any_body_decodes_or_is_refused_with_a_client_error(data: dict[str, Any]) -> None:
    decodes_or_refuses(data)


deltas = st.builds(
    ToolCallDelta, index=st.integers(0, 2), id=st.none() | st.text(max_size=4), name=st.none() | st.text(max_size=4),
    arguments=st.sampled_from(["", "{", '"a": 1', "}", "{}", '{"x": [1]}', "[1]"]),
)  # fmt: skip
chunks = st.builds(
    Chunk, role=st.none() | st.just("assistant"), content=st.none() | st.text(max_size=5),
    reasoning=st.none() | st.text(max_size=5), tool_calls=st.lists(deltas, max_size=2).map(tuple),
    finish_reason=st.none() | st.sampled_from(["stop", "length", "tool_calls"]),
    usage=st.none() | st.builds(Usage, st.integers(0, 99), st.integers(0, 99)),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(chunks, max_size=8), st.booleans())
def test_every_line_of_any_stream_is_json_and_the_last_is_done(stream: list[Chunk], generate: bool) -> None:
    encoder = OllamaEncoder("chat", generate=generate, started=0.0)
    out = b"".join(encoder.render(chunk, 1.0) for chunk in stream)
    try:
        out += encoder.done(2.0)
    except FluidoError as exc:  # malformed tool-call arguments: the route ends the stream with an error line
        assert exc.status == 502
        return
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines[-1]["done"] is True and all(line["done"] is False for line in lines[:-1])
