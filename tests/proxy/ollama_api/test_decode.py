"""Ollama bodies -> the ChatRequest the OpenAI door would build for the same request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import InvalidRequest, ModelNotFound
from proxy.ollama_api.decode import parse_chat, parse_embed, parse_generate, resolve
from proxy.parsing import parse_chat as parse_openai
from proxy.types import ChatRequest

ALIASES = {"chat", "coder:7b"}
HI = [{"role": "user", "content": "hi"}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def chat(**body: Any) -> ChatRequest:
    door = parse_chat(orjson.dumps({"model": "chat", "messages": HI, **body}), ALIASES)
    assert door.request is not None
    return door.request


def openai(**body: Any) -> ChatRequest:
    return parse_openai(orjson.dumps({"model": "chat", "messages": HI, **body}))


def test_a_chat_and_its_openai_twin_become_the_same_request() -> None:
    ollama = chat(stream=False, options={"temperature": 0, "top_p": 0.5, "seed": 7, "num_predict": 64,
                                         "stop": ["\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2})  # fmt: skip
    assert ollama == openai(temperature=0, top_p=0.5, seed=7, max_tokens=64, stop=["\n"],
                            presence_penalty=0.1, frequency_penalty=0.2)  # fmt: skip


def test_ollama_streams_unless_told_not_to() -> None:
    assert chat().stream is True
    assert chat(stream=False).stream is False
    assert chat(stream=None).stream is True


def test_options_without_a_request_field_stay_options_for_an_ollama_upstream() -> None:
    req = chat(options={"temperature": 0.2, "num_ctx": 8192, "top_k": 20, "repeat_penalty": 1.1})
    assert req.temperature == 0.2
    assert req.extra["options"] == {"num_ctx": 8192, "top_k": 20, "repeat_penalty": 1.1}


def test_keep_alive_and_think_travel_as_sent() -> None:
    req = chat(keep_alive="10m", think=True)
    assert req.extra["keep_alive"] == "10m" and req.extra["think"] is True
    assert chat(think="high").extra["think"] == "high"
    with pytest.raises(InvalidRequest):
        chat(think="very")


def test_ollamas_no_limit_and_random_seed_are_no_values() -> None:
    """num_predict -1 and seed -1 are Ollama's defaults: no max_tokens, and not a deterministic request."""
    req = chat(options={"num_predict": -1, "seed": -1})
    assert req.max_tokens is None and req.seed is None and "options" not in req.extra


def test_format_json_and_a_schema_become_response_formats() -> None:
    assert chat(format="json").response_format == {"type": "json_object"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    fmt = chat(format=schema).response_format
    assert fmt is not None and fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert chat(format="").response_format is None
    with pytest.raises(InvalidRequest):
        chat(format="yaml")


def test_model_names_take_the_default_tag() -> None:
    assert resolve("chat", ALIASES) == ("chat", "chat")
    assert resolve("chat:latest", ALIASES) == ("chat:latest", "chat")
    assert resolve("coder:7b", ALIASES) == ("coder:7b", "coder:7b")
    with pytest.raises(ModelNotFound, match="model 'chat:7b' not found"):
        resolve("chat:7b", ALIASES)
    with pytest.raises(InvalidRequest, match="model is required"):
        resolve("", ALIASES)


def test_images_become_data_url_parts_with_their_type() -> None:
    req = chat(messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    content = req.messages[0].content
    assert isinstance(content, list)
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    with pytest.raises(InvalidRequest):
        chat(messages=[{"role": "user", "content": "x", "images": ["not base64!"]}])


def test_tool_calls_get_ids_and_tool_results_answer_them_by_name() -> None:
    messages = [
        {"role": "user", "content": "weather and time in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "clock", "arguments": {"city": "Paris"}}},
        ]},
        {"role": "tool", "content": "12:00", "tool_name": "clock"},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]  # fmt: skip
    req = chat(messages=messages)
    calls = req.messages[1].tool_calls
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("weather", {"city": "Paris"}), ("clock", {"city": "Paris"})
    ]  # fmt: skip
    assert len({c.id for c in calls}) == 2
    by_name = {c.name: c.id for c in calls}
    assert req.messages[2].tool_call_id == by_name["clock"]
    assert req.messages[3].tool_call_id == by_name["weather"]


def test_thinking_in_history_is_reasoning_content() -> None:
    req = chat(messages=[*HI, {"role": "assistant", "content": "hello", "thinking": "be nice"}, *HI])
    assert req.messages[1].reasoning_content == "be nice"


def test_generate_is_a_system_turn_and_a_user_turn() -> None:
    door = parse_generate(orjson.dumps({"model": "chat", "prompt": "hi", "system": "be brief"}), ALIASES)
    assert door.request == parse_openai(orjson.dumps({
        "model": "chat", "stream": True,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }))  # fmt: skip


@pytest.mark.parametrize(
    "field", [{"raw": True}, {"template": "{{ .Prompt }}"}, {"context": [1, 2, 3]}, {"suffix": "return x"}]
)
def test_generate_refuses_what_only_a_templating_server_can_do(field: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="not supported") as info:
        parse_generate(orjson.dumps({"model": "chat", "prompt": "hi", **field}), ALIASES)
    assert info.value.param == next(iter(field))


def test_generate_accepts_the_defaults_clients_send_for_those_fields() -> None:
    body = {"model": "chat", "prompt": "hi", "raw": False, "template": "", "context": [], "suffix": ""}
    assert parse_generate(orjson.dumps(body), ALIASES).request is not None


@pytest.mark.parametrize(
    "keep_alive, unload", [(None, False), ("5m", False), (0, True), ("0", True), ("0s", True)]
)
def test_no_messages_is_a_load_or_an_unload(keep_alive: Any, unload: bool) -> None:
    body = {"model": "chat:latest", "messages": [], "keep_alive": keep_alive}
    door = parse_chat(orjson.dumps(body), ALIASES)
    assert door.request is None and door.unload is unload and door.alias == "chat"
    door = parse_generate(orjson.dumps({"model": "chat", "keep_alive": keep_alive}), ALIASES)
    assert door.request is None and door.unload is unload


def test_a_load_of_an_unknown_model_is_still_not_found() -> None:
    with pytest.raises(ModelNotFound):
        parse_chat(orjson.dumps({"model": "nope", "messages": []}), ALIASES)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "hi"},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": HI, "stream": "yes"},
        {"messages": HI, "options": [1]},
        {"messages": HI, "options": {"num_predict": "ten"}},
        {"messages": HI, "options": {"temperature": "hot"}},
        {"messages": HI, "keep_alive": True},
    ],
)
def test_malformed_bodies_are_bad_requests(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse_chat(orjson.dumps({"model": "chat", **body}), ALIASES)


def test_embed_takes_a_string_or_a_list_and_keeps_ollamas_fields() -> None:
    one = parse_embed(orjson.dumps({"model": "chat", "input": "a", "keep_alive": "1m"}), ALIASES)
    assert one.request is not None and one.request.input == ("a",) and one.request.single
    assert one.request.extra == {"keep_alive": "1m"}
    many = parse_embed(orjson.dumps({"model": "chat", "input": ["a", "b"]}), ALIASES)
    assert many.request is not None and many.request.input == ("a", "b") and not many.request.single
    assert parse_embed(orjson.dumps({"model": "chat", "input": []}), ALIASES).request is None
    legacy = parse_embed(orjson.dumps({"model": "chat", "prompt": "a"}), ALIASES, legacy=True)
    assert legacy.request is not None and legacy.request.input == ("a",)
    with pytest.raises(InvalidRequest):
        parse_embed(orjson.dumps({"model": "chat", "input": [1, 2]}), ALIASES)
