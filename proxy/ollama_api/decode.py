"""Ollama request bodies -> the request types both doors share.

An Ollama body is rewritten as the OpenAI body it is the twin of and handed to the one parser
(``proxy.parsing.chat_from_dict``): both doors validate alike, and a request through either door becomes the
same ``ChatRequest``, so it hits the same cache entry and counts against the same limits. What OpenAI's body
has no field for travels in ``extra`` as it was sent: the ``options`` Fluido does not type, ``keep_alive`` and
``think``, all of which an Ollama upstream receives.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import InvalidRequest, ModelNotFound
from proxy.parsing import chat_from_dict, decode_object
from proxy.types import JSON, ChatRequest, EmbeddingRequest

# Options that are fields of the request itself, under the same name in both APIs.
_TYPED_OPTIONS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "stop")
_ROLES = ("system", "user", "assistant", "tool")
_THINK_LEVELS = frozenset({"high", "medium", "low"})
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"RIFF", "image/webp"))  # fmt: skip
_EMBED_EXTRAS = frozenset({"dimensions", "keep_alive", "truncate", "options"})
_ZERO_DURATION = re.compile(r"-?0+(\.0*)?(ns|us|µs|ms|s|m|h)?")
# Generate fields that only make sense when the server templates the prompt itself; Fluido speaks to chat
# APIs, where the upstream applies the model's own chat template.
_TEMPLATING = {
    "raw": "raw prompts",
    "template": "prompt templates",
    "context": "'context' token lists",
    "suffix": "fill-in-the-middle ('suffix')",
}


@dataclass(frozen=True, slots=True)
class DoorRequest:
    """A chat or generate request through Ollama's door."""

    name: str  # the model as the client named it: every reply echoes it
    alias: str
    request: ChatRequest | None  # None: no messages, a request to load (or unload) the model
    unload: bool = False
    keep_alive: JSON = None  # of a load request


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """An /api/embed or /api/embeddings request; ``request`` is None when there is nothing to embed."""

    name: str
    alias: str
    request: EmbeddingRequest | None


def _fail(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def resolve(name: Any, aliases: Container[str]) -> tuple[str, str]:
    """(the name as sent, the alias it means). Ollama's clients may add the default tag ``:latest``."""
    if not isinstance(name, str) or not name:
        raise _fail("model is required", "model")
    if name in aliases:
        return name, name
    base, _, tag = name.rpartition(":")
    if tag == "latest" and base in aliases:
        return name, base
    if f"{name}:latest" in aliases:
        return name, f"{name}:latest"
    raise ModelNotFound(f"model '{name}' not found", param="model")


def _data_url(image: Any, param: str) -> str:
    if not isinstance(image, str) or not image:
        raise _fail(f"{param} must be base64-encoded image data", param)
    if image.startswith("data:"):
        return image
    try:
        head = base64.b64decode(image[:16], validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{param} is not valid base64", param) from None
    mime = next((m for magic, m in _MAGIC if head.startswith(magic)), "image/jpeg")
    return f"data:{mime};base64,{image}"


def _content(text: Any, images: Any, param: str) -> str | list[dict[str, Any]]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _fail(f"{param} must be a string", param)
    if not images:
        return text
    if not isinstance(images, list):
        raise _fail("images must be a list of base64-encoded images", "images")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, image in enumerate(images):
        parts.append({"type": "image_url", "image_url": {"url": _data_url(image, f"images[{i}]")}})
    return parts


def _tool_call(raw: Any, default_id: str, param: str) -> dict[str, Any]:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _fail(f"{param} needs a function with a name", param)
    arguments = fn.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict | str):
        raise _fail(f"{param}.function.arguments must be an object", param)
    text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw["id"] else default_id
    return {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": text}}


def _answered_call(raw: dict[str, Any], pending: list[tuple[str, str]], i: int) -> str:
    """The id of the call a tool message answers: its own id, else the first open call of its tool's name,
    else the first open call. Ollama's messages name the tool; OpenAI's point at the call."""
    explicit = raw.get("tool_call_id")
    if isinstance(explicit, str) and explicit:
        pending[:] = [p for p in pending if p[0] != explicit]
        return explicit
    name = raw.get("tool_name") or raw.get("name")
    for j, (_, call_name) in enumerate(pending):
        if call_name == name:
            return pending.pop(j)[0]
    return pending.pop(0)[0] if pending else f"call_{i}"


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _fail("messages must be a list", "messages")
    out = []
    pending: list[tuple[str, str]] = []  # (id, name) of the calls no tool message has answered yet
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _fail(f"{param} must be an object", param)
        role = m.get("role")
        if role not in _ROLES:
            raise _fail(f"{param}.role must be one of {', '.join(_ROLES)}", f"{param}.role")
        body: dict[str, Any] = {"role": role, "content": _content(m.get("content"), m.get("images"), param)}
        if thinking := m.get("thinking"):
            if not isinstance(thinking, str):
                raise _fail(f"{param}.thinking must be a string", f"{param}.thinking")
            body["reasoning_content"] = thinking
        if calls := m.get("tool_calls"):
            if not isinstance(calls, list):
                raise _fail(f"{param}.tool_calls must be a list", f"{param}.tool_calls")
            body["tool_calls"] = [
                _tool_call(c, f"call_{i}_{j}", f"{param}.tool_calls[{j}]") for j, c in enumerate(calls)
            ]
            pending = [(c["id"], c["function"]["name"]) for c in body["tool_calls"]]
        if role == "tool":
            body["tool_call_id"] = _answered_call(m, pending, i)
        out.append(body)
    return out


def _options(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ollama's options -> (request fields, the options only an Ollama upstream understands)."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise _fail("options must be an object", "options")
    rest = {k: v for k, v in raw.items() if v is not None}
    fields = {key: rest.pop(key) for key in _TYPED_OPTIONS if key in rest}
    seed = rest.pop("seed", None)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _fail('option "seed" must be of type integer', "options.seed")
        if seed >= 0:  # Ollama's -1 means a random seed: not a seed at all, and not deterministic
            fields["seed"] = seed
    predict = rest.pop("num_predict", None)
    if predict is not None:
        if isinstance(predict, bool) or not isinstance(predict, int):
            raise _fail('option "num_predict" must be of type integer', "options.num_predict")
        if predict > 0:  # -1 (no limit) and -2 (fill the context) are what no max_tokens means
            fields["max_tokens"] = predict
    return fields, rest


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise _fail('format must be "json" or a JSON schema object', "format")


def _common(data: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI fields (and extras) that chat and generate bodies share."""
    stream = data.get("stream")
    if stream is None:
        stream = True  # Ollama streams unless told not to
    if not isinstance(stream, bool):
        raise _fail("stream must be a boolean", "stream")
    fields, options = _options(data.get("options"))
    body: dict[str, Any] = {"stream": stream, **fields}
    if (fmt := _response_format(data.get("format"))) is not None:
        body["response_format"] = fmt
    if options:
        body["options"] = options
    keep_alive = data.get("keep_alive")
    if keep_alive is not None:
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, int | float | str):
            raise _fail("keep_alive must be a duration string or a number of seconds", "keep_alive")
        body["keep_alive"] = keep_alive
    think = data.get("think")
    if think is not None:
        if not isinstance(think, bool) and not (isinstance(think, str) and think in _THINK_LEVELS):
            raise _fail('think must be true, false, "high", "medium" or "low"', "think")
        body["think"] = think
    return body


def _unloads(data: dict[str, Any]) -> bool:
    keep_alive = data.get("keep_alive")
    if isinstance(keep_alive, str):
        return _ZERO_DURATION.fullmatch(keep_alive) is not None
    return keep_alive == 0 and not isinstance(keep_alive, bool)


def parse_chat(body: bytes, aliases: Container[str]) -> DoorRequest:
    """An /api/chat body."""
    data = decode_object(body)
    name, alias = resolve(data.get("model"), aliases)
    if not data.get("messages"):
        return DoorRequest(name, alias, None, _unloads(data), data.get("keep_alive"))
    openai: dict[str, Any] = {"model": alias, "messages": _messages(data["messages"]), **_common(data)}
    if tools := data.get("tools"):
        openai["tools"] = tools
    return DoorRequest(name, alias, chat_from_dict(openai))


def parse_generate(body: bytes, aliases: Container[str]) -> DoorRequest:
    """An /api/generate body: the prompt becomes a user turn, after the system prompt if there is one."""
    data = decode_object(body)
    name, alias = resolve(data.get("model"), aliases)
    for key, what in _TEMPLATING.items():
        if data.get(key):
            raise _fail(
                f"{what} are not supported: Fluido serves chat models, and the upstream applies the "
                "model's own chat template to the prompt",
                key,
            )
    prompt, images = data.get("prompt"), data.get("images")
    if not prompt and not images:
        return DoorRequest(name, alias, None, _unloads(data), data.get("keep_alive"))
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise _fail("system must be a string", "system")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _content(prompt, images, "prompt")})
    return DoorRequest(name, alias, chat_from_dict({"model": alias, "messages": messages, **_common(data)}))


def parse_embed(body: bytes, aliases: Container[str], legacy: bool = False) -> EmbedRequest:
    """An /api/embed body (``input``: a string or a list of strings), or /api/embeddings' (``prompt``)."""
    data = decode_object(body)
    name, alias = resolve(data.get("model"), aliases)
    key = "prompt" if legacy else "input"
    raw = data.get(key)
    items = [raw] if isinstance(raw, str) else raw
    if raw is None or not items or items == [""]:
        return EmbedRequest(name, alias, None)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _fail(f"{key} must be a string or a list of strings", key)
    # Ollama-only fields go to an Ollama upstream and are dropped for others.
    extra = {k: v for k, v in data.items() if k in _EMBED_EXTRAS and v is not None}
    return EmbedRequest(name, alias, EmbeddingRequest(alias, tuple(items), isinstance(raw, str), extra))
