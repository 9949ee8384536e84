from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import InvalidRequest
from proxy.parsing import ROLES, parse_chat, parse_embedding

HI = [{"role": "user", "content": "hi"}]


def chat(**body: Any) -> bytes:
    return orjson.dumps({"model": "m", "messages": HI, **body})


def test_unknown_fields_are_kept_verbatim_for_the_upstream() -> None:
    req = parse_chat(chat(top_k=20, min_p=0.1, structured_outputs={"choice": ["a", "b"]}, user="u1"))
    assert req.extra == {
        "top_k": 20,
        "min_p": 0.1,
        "structured_outputs": {"choice": ["a", "b"]},
        "user": "u1",
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert parse_chat(chat(max_tokens=10, max_completion_tokens=20)).max_tokens == 20


def test_stop_accepts_a_string_or_a_list() -> None:
    assert parse_chat(chat(stop="END")).stop == ("END",)
    assert parse_chat(chat(stop=["a", "b"])).stop == ("a", "b")


def test_include_usage_is_read_from_stream_options() -> None:
    assert parse_chat(chat(stream=True, stream_options={"include_usage": True})).include_usage
    assert not parse_chat(chat(stream=True)).include_usage


def test_assistant_tool_calls_and_tool_results_are_typed() -> None:
    messages = [
        *HI,
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]  # fmt: skip
    req = parse_chat(orjson.dumps({"model": "m", "messages": messages}))
    assert req.messages[1].tool_calls[0].name == "f"
    assert req.messages[2].tool_call_id == "c1"


@pytest.mark.parametrize("role", sorted(ROLES - {"tool"}))
def test_a_role_and_a_string_parse_as_a_message_with_every_other_field_given_does(role: str) -> None:
    # {"role", "content"} alone takes a short cut; with "name": null it takes the full walk.
    plain = parse_chat(chat(messages=[{"role": role, "content": "hi there"}])).messages[0]
    walked = parse_chat(chat(messages=[{"role": role, "content": "hi there", "name": None}])).messages[0]
    assert plain == walked
    assert (plain.role, plain.content, plain.extra) == (role, "hi there", {})


@pytest.mark.parametrize(
    "message",
    [{"role": "tool", "content": "x"}, {"role": ["user"], "content": "x"}, {"role": "robot", "content": "x"}],
)
def test_a_two_field_message_with_a_bad_role_is_refused_as_before(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat(chat(messages=[message]))
    assert info.value.param in ("messages[0].role", "messages[0].tool_call_id")


def test_content_parts_are_accepted() -> None:
    parts = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    req = parse_chat(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": parts}]}))
    assert req.messages[0].content == parts


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[1, 2]", None),
        (orjson.dumps({"model": 3, "messages": HI}), "model"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (chat(messages=[*HI, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]),
         "messages[1].tool_calls[0].function.arguments"),
        (chat(top_p=1.5), "top_p"),
        (chat(seed=1.5), "seed"),
        (chat(n=True), "n"),
        (chat(stop=[1]), "stop"),
        (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options"),
        (chat(response_format={"type": "json_schema", "json_schema": "x"}), "response_format.json_schema"),
    ],
)  # fmt: skip
def test_invalid_bodies_name_the_offending_param(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat(body)
    assert info.value.param == param and info.value.status == 400


def test_embedding_input_is_normalised_to_a_tuple() -> None:
    assert parse_embedding(orjson.dumps({"model": "m", "input": "a"})).input == ("a",)
    assert parse_embedding(orjson.dumps({"model": "m", "input": [1, 2]})).input == ((1, 2),)
    many = parse_embedding(orjson.dumps({"model": "m", "input": ["a", "b"], "dimensions": 4}))
    assert many.input == ("a", "b") and not many.single and many.extra == {"dimensions": 4}
