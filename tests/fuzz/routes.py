"""The routes the fuzzer covers: a path, the strategy of its valid bodies, hand cases, and how a success
looks. Adding a route (Ollama's /api/chat and /api/generate, the RAG routes) is one more ``FuzzRoute``
in ``routes()``, with its own ``success`` check and, for non-OpenAI routes, its own ``error`` check."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.fuzz.cases import Case, spoiled
from tests.fuzz.oracle import (
    Reply,
    chat_success,
    embeddings_success,
    ollama_error,
    ollama_success,
    openai_error,
)
from tests.fuzz.schema import SchemaStrategies, load_schema

HI = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class FuzzRoute:
    path: str
    valid: st.SearchStrategy[dict[str, Any]]
    success: Callable[[Reply], str | None]  # None when a 2xx reply is well formed, else what is wrong
    error: Callable[[Reply], str | None] = openai_error  # the same for a 4xx
    hand: Sequence[dict[str, Any]] = field(default=())  # literal bodies: the edges a generator rarely hits

    def cases(self) -> st.SearchStrategy[Case]:
        valid = self.valid.map(lambda body: Case("valid", self.path, _dump(body)))
        hand = st.sampled_from(list(self.hand)).map(lambda body: Case("hand", self.path, _dump(body)))
        mixed = [valid, spoiled(self.valid, self.path)]
        return st.one_of(*mixed, hand) if self.hand else st.one_of(*mixed)


def _dump(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def chat_hand_cases(aliases: Sequence[str]) -> list[dict[str, Any]]:
    """Each union-typed field of CreateChatCompletionRequest in each of its shapes, and just outside them."""
    fn = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    variants: list[dict[str, Any]] = [
        # content: string, parts of every type, empty, null, odd parts
        *({"messages": [{"role": "user", "content": c}]} for c in (
            "", "hi", [], None, [{"type": "text", "text": "hi"}], [{"type": "text", "text": ""}],
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}],
            [{"type": "image_url", "image_url": {"url": "https://example.invalid/x.png", "detail": "low"}}],
            [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
            [{"type": "file", "file": {"file_id": "file-1"}}], [{"type": "refusal", "refusal": "no"}],
            [{"type": "text"}], [{"text": "hi"}], [{"type": "text", "text": "a"}, "b"],
        )),
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]}]},
        {"messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}, *HI]},
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        # stop: string, list, empty list, null, too many, not strings
        *({"stop": s} for s in ("", "\n", ["a"], [], None, ["a", "b", "c", "d", "e"], [1], [["a"]], {"a": 1})),
        # tool_choice and tools
        *({"tool_choice": c, "tools": [fn]} for c in (
            "none", "auto", "required", {"type": "function", "function": {"name": "f"}},
            {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [fn]}},
            {"type": "custom", "custom": {"name": "c"}}, {"type": "function"}, {"function": {"name": "f"}},
            "sometimes", 1, [],
        )),
        *({"tools": t} for t in (
            [], [fn], [fn, fn], [{"type": "custom", "custom": {"name": "c"}}], [{"type": "function"}],
            [{"type": "function", "function": {"name": ""}}], [{"type": "function", "function": {"name": "f", "parameters": []}}],
        )),
        # response_format
        *({"response_format": f} for f in (
            {"type": "text"}, {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
            {"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "json_schema", "json_schema": {"name": "x", "schema": None}},
            {"type": "json_schema"}, {"type": "json_object", "schema": schema}, {"type": "grammar"}, {}, None,
        )),
        # max_tokens against max_completion_tokens
        *({**m} for m in (
            {"max_tokens": 1}, {"max_completion_tokens": 1}, {"max_tokens": 5, "max_completion_tokens": 3},
            {"max_tokens": None, "max_completion_tokens": 3}, {"max_tokens": 0}, {"max_completion_tokens": -1},
            {"max_tokens": 2.5}, {"max_tokens": 2**31}, {"max_tokens": 2**63}, {"max_completion_tokens": True},
        )),
        # n
        *({"n": n} for n in (1, 2, 3, 0, -1, 16, 17, 128, 129, "2", 2.0, True, None)),
        *({"n": 2, "stream": True, "stream_options": {"include_usage": True}, **extra} for extra in ({}, {"temperature": 0})),
        # extras the Ollama adapter reads (sent to every alias: the OpenAI-compatible one passes them on)
        *({**x} for x in (
            {"options": [1]}, {"options": "x"}, {"options": {"num_ctx": "big"}}, {"keep_alive": {"a": 1}},
            {"keep_alive": -1}, {"think": "x"}, {"top_k": "x"}, {"num_ctx": []}, {"format": 5},
        )),
        # stream and stream_options
        {"stream": True, "stream_options": {"include_usage": True}}, {"stream": False, "stream_options": None},
        {"stream": True, "stream_options": {}}, {"stream": None},
    ]  # fmt: skip
    return [{"model": alias, "messages": HI, **variant} for variant in variants for alias in aliases]


def embedding_bodies(aliases: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    text = st.text(max_size=24)
    tokens = st.lists(st.integers(0, 50_000), min_size=1, max_size=8)
    inputs = text | st.lists(text, min_size=1, max_size=4) | tokens | st.lists(tokens, min_size=1, max_size=3)
    return st.fixed_dictionaries(
        {"model": st.sampled_from(list(aliases)), "input": inputs},
        optional={
            "encoding_format": st.sampled_from(["float", "base64"]),
            "dimensions": st.integers(1, 4096),
            "user": st.text(max_size=12),
        },
    )


def ollama_hand_cases(aliases: Sequence[str], base: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields Ollama's door reads, each in a shape it does not take."""
    odd: list[Any] = [None, [], [[1]], {}, {"a": 1}, "", "x", -1, 1.5, True]
    fields = ("think", "keep_alive", "options", "format", "stream", "images", "system", "template", "tools")
    return [{"model": alias, **base, key: value} for alias in aliases for key in fields for value in odd]


def ollama_bodies(aliases: Sequence[str], generate: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Ollama's /api/chat and /api/generate bodies, the fields its API documents."""
    text = st.text(max_size=24)
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": text},
        optional={
            "images": st.lists(st.sampled_from(["iVBORw0KGgo=", "AAAA"]), max_size=1),
            "thinking": text,
        },
    )
    options = st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.floats(0, 2), "top_k": st.integers(0, 100), "top_p": st.floats(0, 1),
            "num_predict": st.integers(-2, 64), "num_ctx": st.integers(0, 8192), "seed": st.integers(0, 2**31),
            "stop": st.lists(text, max_size=2),
        },
    )  # fmt: skip
    common = {
        "stream": st.booleans(), "options": options, "format": st.sampled_from(["json", {"type": "object"}, ""]),
        "keep_alive": st.sampled_from(["5m", 0, -1, "1h"]), "think": st.booleans(),
    }  # fmt: skip
    first = {
        "model": st.sampled_from(list(aliases)),
        **({"prompt": text} if generate else {"messages": st.lists(message, min_size=1, max_size=3)}),
    }
    extra = {"system": text, "raw": st.booleans(), "suffix": text} if generate else {"tools": st.just([])}
    return st.fixed_dictionaries(first, optional={**common, **extra})


def routes(aliases: Sequence[str]) -> list[FuzzRoute]:
    """Every route the fuzzer covers, for a Fluido whose model aliases are ``aliases``."""
    # Mostly a configured alias (the request gets through), sometimes any name (a 404).
    model = st.one_of(*[st.sampled_from(list(aliases))] * 4, st.text(max_size=12))
    chat = SchemaStrategies(load_schema(), {"model": model}).request()
    embed_hand = [
        {"model": aliases[0], "input": x}
        for x in ("", [], [""], [[]], [1, "a"], [[1], ["a"]], None, 5, {"a": 1})
    ]
    return [
        FuzzRoute("/v1/chat/completions", chat, chat_success, hand=chat_hand_cases(aliases)),
        FuzzRoute("/v1/embeddings", embedding_bodies(aliases), embeddings_success, hand=embed_hand),
        # Ollama's door: its own shapes of success and error.
        FuzzRoute(
            "/api/chat",
            ollama_bodies(aliases, generate=False),
            ollama_success,
            ollama_error,
            hand=ollama_hand_cases(aliases, {"messages": HI}),
        ),
        FuzzRoute(
            "/api/generate",
            ollama_bodies(aliases, generate=True),
            ollama_success,
            ollama_error,
            hand=ollama_hand_cases(aliases, {"prompt": "hi"}),
        ),
    ]
