"""Request bodies -> validated request types. Every rejection is a 400 naming the offending ``param``."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest
from proxy.types import ChatRequest, EmbeddingRequest, Message, ToolCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"})
# Fields ChatRequest types itself; everything else in the body goes to ``extra`` untouched.
_CHAT_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "n",
        "tools", "tool_choice", "response_format",
    }
)  # fmt: skip


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def decode_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(f"'{key}' must be a number between {lo:g} and {hi:g}.", key)
    return float(value)


def _integer(data: dict[str, Any], key: str, lo: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _fail(f"'{key}' must be an integer of at least {lo}.", key)
    return value


def _tool_call(raw: Any, param: str) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _fail("A tool call needs a 'function' with a 'name'.", param)
    arguments = fn.get("arguments", "")
    if not isinstance(arguments, str):
        raise _fail("Tool call arguments must be a JSON string.", f"{param}.function.arguments")
    return ToolCall(id=str(raw.get("id") or ""), name=fn["name"], arguments=arguments)


def _message(raw: Any, i: int) -> Message:
    param = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _fail("Each message must be an object.", param)
    role = raw.get("role")
    if role not in ROLES:
        raise _fail(f"'role' must be one of {', '.join(sorted(ROLES))}.", f"{param}.role")
    content = raw.get("content")
    if content is not None and not isinstance(content, str | list):
        raise _fail("'content' must be a string or a list of content parts.", f"{param}.content")
    if isinstance(content, list) and not all(isinstance(p, dict) and "type" in p for p in content):
        raise _fail("Each content part must be an object with a 'type'.", f"{param}.content")
    tool_calls = raw.get("tool_calls") or ()
    if not isinstance(tool_calls, list | tuple):
        raise _fail("'tool_calls' must be a list.", f"{param}.tool_calls")
    for key in ("name", "tool_call_id", "reasoning_content"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _fail(f"'{key}' must be a string.", f"{param}.{key}")
    if role == "tool" and not raw.get("tool_call_id"):
        raise _fail("A tool message needs the 'tool_call_id' it answers.", f"{param}.tool_call_id")
    return Message(
        role=role,
        content=content,
        name=raw.get("name"),
        tool_calls=tuple(_tool_call(t, f"{param}.tool_calls[{j}]") for j, t in enumerate(tool_calls)),
        tool_call_id=raw.get("tool_call_id"),
        reasoning_content=raw.get("reasoning_content"),
        extra={k: v for k, v in raw.items() if k not in _MESSAGE_FIELDS},
    )


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise _fail("'stop' must be a string or a list of strings.", "stop")


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail("'tools' must be a list.", "tools")
    for i, tool in enumerate(value):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _fail("Each tool needs a 'function' with a 'name'.", f"tools[{i}]")
    return tuple(value)


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        raise _fail("'response_format.type' must be text, json_object or json_schema.", "response_format")
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("schema", {}), dict):
            raise _fail("'json_schema' must be an object with a 'schema'.", "response_format.json_schema")
    return value


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' is required and must be a string.", "model")
    return model


def parse_chat(body: bytes) -> ChatRequest:
    return chat_from_dict(decode_object(body))


def chat_from_dict(data: dict[str, Any]) -> ChatRequest:
    """A decoded OpenAI-shaped body -> ChatRequest. Ollama's door builds such a body, so both doors
    validate alike and a request and its twin through the other door become the same ChatRequest."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty list.", "messages")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _fail("'stream' must be a boolean.", "stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _fail("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise _fail("'stream_options.include_usage' must be a boolean.", "stream_options")
        include_usage = options.get("include_usage", False)
    max_tokens = _integer(data, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens", 1)
    seed = _integer(data, "seed", -(2**63))
    return ChatRequest(
        model=_model(data),
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 0, 2),
        top_p=_number(data, "top_p", 0, 1),
        seed=seed,
        stop=_stop(data.get("stop")),
        presence_penalty=_number(data, "presence_penalty", -2, 2),
        frequency_penalty=_number(data, "frequency_penalty", -2, 2),
        n=_integer(data, "n", 1) or 1,
        tools=_tools(data.get("tools")),
        tool_choice=data.get("tool_choice"),
        response_format=_response_format(data.get("response_format")),
        extra={k: v for k, v in data.items() if k not in _CHAT_FIELDS},
    )


def parse_embedding(body: bytes) -> EmbeddingRequest:
    data = decode_object(body)
    raw = data.get("input")
    single = isinstance(raw, str) or (isinstance(raw, list) and bool(raw) and isinstance(raw[0], int))
    items = [raw] if single else raw
    if not isinstance(items, list) or not items:
        raise _fail("'input' must be a string, a list of strings or a list of token lists.", "input")
    parsed: list[str | tuple[int, ...]] = []
    for item in items:
        if isinstance(item, str):
            parsed.append(item)
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            parsed.append(tuple(item))
        else:
            raise _fail("'input' must be a string, a list of strings or a list of token lists.", "input")
    return EmbeddingRequest(
        model=_model(data),
        input=tuple(parsed),
        single=single,
        extra={k: v for k, v in data.items() if k not in ("model", "input")},
    )
