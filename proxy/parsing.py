"""Request bodies -> validated request types. Every rejection is a 400 naming the offending ``param``.

Fields Fluido reads are type-checked here, so nothing further in can fail on a client's odd value; fields it
passes through are only bounded in depth, because every layer after this one (the cache key, the upstream
body, the log) serializes them with orjson, which stops at 255 levels.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest
from proxy.types import ChatRequest, EmbeddingRequest, Message, ToolCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PLAIN_ROLES = ROLES - {"tool"}
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


# Deep enough for any real JSON schema or tool definition; well under orjson's 255-level limit on output.
MAX_DEPTH = 64
MAX_N = 16  # choices per request: each one is a full generation on the upstream
INT64 = 2**63 - 1


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _too_deep(data: Any, limit: int) -> bool:
    """Whether a decoded document nests objects or arrays deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


def decode_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # Each level of nesting opens with a bracket: a body with few of them cannot nest deeply, and counting
    # bytes is far cheaper than walking the decoded document (brackets inside strings only count extra).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _too_deep(data, MAX_DEPTH):
        raise InvalidRequest(f"The request body nests deeper than {MAX_DEPTH} levels.")
    return data


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(f"'{key}' must be a number between {lo:g} and {hi:g}.", key)
    return float(value)


def _integer(data: dict[str, Any], key: str, lo: int, hi: int = INT64) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(f"'{key}' must be an integer between {lo} and {hi}.", key)
    return value


def _optional_str(raw: dict[str, Any], key: str, param: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(f"'{key}' must be a string.", f"{param}.{key}")
    return value


def _tool_call(raw: Any, param: str) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _fail("A tool call needs a 'function' with a 'name'.", param)
    arguments = fn.get("arguments", "")
    if not isinstance(arguments, str):
        raise _fail("Tool call arguments must be a JSON string.", f"{param}.function.arguments")
    return ToolCall(id=_optional_str(raw, "id", param) or "", name=fn["name"], arguments=arguments)


def _content(content: Any, param: str) -> str | list[Any] | None:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail("'content' must be a string or a list of content parts.", param)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _fail("Each content part must be an object with a string 'type'.", f"{param}[{j}]")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _fail("A text part needs a string 'text'.", f"{param}[{j}].text")
        if part["type"] == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise _fail("An image part needs an 'image_url' object with a string 'url'.", f"{param}[{j}]")
    return content


def _message(raw: Any, i: int) -> Message:
    # Most messages are a role and a string, nothing else: the Message the walk below would build, built
    # without it (a tool message needs its tool_call_id, so it always takes the walk).
    if (
        type(raw) is dict
        and len(raw) == 2
        and type(content := raw.get("content")) is str
        and type(role := raw.get("role")) is str
        and role in _PLAIN_ROLES
    ):
        return Message(role, content)
    param = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _fail("Each message must be an object.", param)
    role = raw.get("role")
    # isinstance first: an unhashable value (a list) cannot even be looked up in the set.
    if not isinstance(role, str) or role not in ROLES:
        raise _fail(f"'role' must be one of {', '.join(sorted(ROLES))}.", f"{param}.role")
    content = _content(raw.get("content"), f"{param}.content")
    tool_calls = raw.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise _fail("'tool_calls' must be a list.", f"{param}.tool_calls")
    name = _optional_str(raw, "name", param)
    tool_call_id = _optional_str(raw, "tool_call_id", param)
    reasoning = _optional_str(raw, "reasoning_content", param)
    if role == "tool" and not tool_call_id:
        raise _fail("A tool message needs the 'tool_call_id' it answers.", f"{param}.tool_call_id")
    return Message(
        role=role,
        content=content,
        name=name,
        tool_calls=tuple(_tool_call(t, f"{param}.tool_calls[{j}]") for j, t in enumerate(tool_calls)),
        tool_call_id=tool_call_id,
        reasoning_content=reasoning,
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


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise _fail("'tool_choice' must be none, auto, required or an object with a 'type'.", "tool_choice")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(kind := value.get("type"), str)
        or kind not in RESPONSE_FORMATS
    ):
        raise _fail("'response_format.type' must be text, json_object or json_schema.", "response_format")
    if kind == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("schema") or {}, dict):
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
    # Both are checked, so a wrong-typed one is named even when the other would win.
    max_tokens = _integer(data, "max_completion_tokens", 1)
    legacy_max = _integer(data, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = legacy_max
    seed = _integer(data, "seed", -INT64 - 1)
    return ChatRequest(
        model=_model(data),
        messages=tuple([_message(m, i) for i, m in enumerate(messages)]),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 0, 2),
        top_p=_number(data, "top_p", 0, 1),
        seed=seed,
        stop=_stop(data.get("stop")),
        presence_penalty=_number(data, "presence_penalty", -2, 2),
        frequency_penalty=_number(data, "frequency_penalty", -2, 2),
        n=_integer(data, "n", 1, MAX_N) or 1,
        tools=_tools(data.get("tools")),
        tool_choice=_tool_choice(data.get("tool_choice")),
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
