"""Ollama's native API (``/api/chat``, ``/api/embed``), so ``keep_alive`` and ``options`` are reachable.

OpenAI and Ollama differ in a few places this module bridges: tool arguments are JSON strings in one and
objects in the other, ``developer`` is ``system``, images travel as base64 beside the text, reasoning is
``thinking``, and usage comes from the final line's eval counts.
"""

from __future__ import annotations

import base64
import secrets
from array import array
from contextlib import aclosing
from typing import Any

import orjson

from adapters.context import ContextSizer
from adapters.decoders import NDJSONDecoder
from adapters.http import UpstreamHTTP
from proxy.config_upstreams import UpstreamConfig
from proxy.errors import InvalidRequest, UpstreamError
from proxy.tokens import estimate_prompt_tokens
from proxy.types import (
    JSON,
    ChatRequest,
    Choice,
    Chunk,
    Completion,
    EmbeddingRequest,
    Message,
    Stream,
    Target,
    ToolCall,
    ToolCallDelta,
    Usage,
)

# Sampling fields a client may send as top-level extras (vLLM-style) that Ollama takes as options.
OPTION_EXTRAS = frozenset(
    {"top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "num_ctx", "num_keep", "mirostat",
     "mirostat_eta", "mirostat_tau", "tfs_z", "num_batch", "num_gpu", "num_thread"}
)  # fmt: skip
_EMBED_FIELDS = frozenset({"keep_alive", "truncate", "options", "dimensions"})
_FINISH = {"length": "length", "stop": "stop"}
_NS_PER_MS = 1_000_000


def _content(content: str | list[JSON] | None, param: str) -> tuple[str, list[str]]:
    """OpenAI content (string or parts) -> Ollama's text plus base64 images."""
    if content is None or isinstance(content, str):
        return content or "", []
    texts, images = [], []
    for part in content:
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if not url.startswith("data:") or ";base64," not in url:
                raise InvalidRequest("Ollama upstreams take images as base64 data URLs only.", param=param)
            images.append(url.split(";base64,", 1)[1])
        else:
            raise InvalidRequest(f"Content part type {part.get('type')!r} is not supported.", param=param)
    return "\n".join(texts), images


def _arguments(raw: str, param: str) -> Any:
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param) from None


def message_body(m: Message, i: int, tool_names: dict[str, str]) -> dict[str, Any]:
    text, images = _content(m.content, f"messages[{i}].content")
    body: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": text}
    if images:
        body["images"] = images
    if m.reasoning_content:
        body["thinking"] = m.reasoning_content
    if m.tool_calls:
        body["tool_calls"] = [
            {"function": {"name": t.name, "arguments": _arguments(t.arguments, f"messages[{i}].tool_calls")}}
            for t in m.tool_calls
        ]
    if m.role == "tool" and m.tool_call_id in tool_names:
        body["tool_name"] = tool_names[m.tool_call_id]
    return body


def request_body(
    req: ChatRequest, target: Target, stream: bool, sizer: ContextSizer | None = None
) -> dict[str, Any]:
    if req.n != 1:
        raise InvalidRequest("Ollama upstreams return one choice; 'n' must be 1.", param="n")
    tool_names = {t.id: t.name for m in req.messages for t in m.tool_calls}
    client_options = req.extra.get("options") or {}
    if not isinstance(client_options, dict):
        raise InvalidRequest("'options' must be an object of Ollama options.", param="options")
    options: dict[str, Any] = {**target.options, **req.profile_ollama_options, **client_options}
    options.update((k, v) for k, v in req.extra.items() if k in OPTION_EXTRAS)
    sampling = {
        "num_predict": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
    }
    options.update((k, v) for k, v in sampling.items() if v is not None)
    if req.stop:
        options["stop"] = list(req.stop)
    if sizer is not None and target.max_context and "num_ctx" not in options:
        options["num_ctx"] = sizer.size(
            target.model, estimate_prompt_tokens(req), req.max_tokens, target.max_context
        )
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [message_body(m, i, tool_names) for i, m in enumerate(req.messages)],
        "stream": stream,
    }
    if options:
        body["options"] = options
    keep_alive = req.extra.get("keep_alive", target.keep_alive)
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if req.tools:
        body["tools"] = list(req.tools)
    fmt = req.response_format or {}
    if fmt.get("type") == "json_object":
        body["format"] = "json"
    elif fmt.get("type") == "json_schema":
        body["format"] = fmt["json_schema"].get("schema", {})
    if "think" in req.extra:
        body["think"] = req.extra["think"]
    return body


def _tool_calls(raw: Any, start: int) -> tuple[ToolCallDelta, ...]:
    # Ollama sends each call whole; it becomes one delta carrying id, name and all of its arguments.
    return tuple(
        ToolCallDelta(
            index=start + i,
            id=t.get("id") or f"call_{secrets.token_hex(12)}",
            name=t["function"]["name"],
            arguments=orjson.dumps(t["function"].get("arguments") or {}).decode(),
        )
        for i, t in enumerate(raw or ())
    )


def _usage(line: dict[str, Any]) -> Usage | None:
    prompt, completion = line.get("prompt_eval_count"), line.get("eval_count")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None


def _meta(line: dict[str, Any]) -> dict[str, float]:
    return {
        f"{key}_ms": line[key] / _NS_PER_MS
        for key in ("load_duration", "prompt_eval_duration", "eval_duration", "total_duration")
        if isinstance(line.get(key), int)
    }


def _finish(line: dict[str, Any], saw_tool_calls: bool) -> str:
    # Ollama reports "stop" after a tool call; OpenAI clients expect "tool_calls".
    return "tool_calls" if saw_tool_calls else _FINISH.get(line.get("done_reason") or "stop", "stop")


def _check(line: Any) -> dict[str, Any]:
    if not isinstance(line, dict):
        raise UpstreamError("Ollama sent a line that is not a JSON object.")
    if "error" in line:
        raise UpstreamError(f"Ollama failed mid-reply: {line['error']}")
    return line


class OllamaAdapter:
    """Ollama's native ``/api/chat``; ``url`` is the server root (http://host:11434)."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.http = UpstreamHTTP(cfg)
        self.sizer = ContextSizer(cfg.context_sticky_seconds)

    async def chat(self, req: ChatRequest, target: Target) -> Completion:
        line = _check(await self.http.post_json("api/chat", request_body(req, target, False, self.sizer)))
        msg = line.get("message") or {}
        calls = tuple(
            ToolCall(d.id or "", d.name or "", d.arguments) for d in _tool_calls(msg.get("tool_calls"), 0)
        )
        message = Message(
            role="assistant",
            content=msg.get("content") or ("" if not calls else None),
            tool_calls=calls,
            reasoning_content=msg.get("thinking") or None,
        )
        choice = Choice(0, message, _finish(line, bool(calls)))
        return Completion(choices=(choice,), usage=_usage(line), meta=_meta(line))

    async def stream(self, req: ChatRequest, target: Target) -> Stream:
        body = request_body(req, target, True, self.sizer)
        tool_count = 0
        async with aclosing(self.http.frames("api/chat", body, NDJSONDecoder())) as frames:
            async for raw in frames:
                try:
                    line = _check(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    raise UpstreamError("Ollama sent a malformed stream line.") from None
                msg = line.get("message") or {}
                calls = _tool_calls(msg.get("tool_calls"), tool_count)
                tool_count += len(calls)
                if msg.get("content") or msg.get("thinking") or calls:
                    yield Chunk(
                        content=msg.get("content") or None,
                        reasoning=msg.get("thinking") or None,
                        tool_calls=calls,
                    )
                if line.get("done"):
                    yield Chunk(finish_reason=_finish(line, tool_count > 0), meta=_meta(line))
                    if usage := _usage(line):
                        yield Chunk(usage=usage)
                    return
        raise UpstreamError("Ollama ended the stream before the reply was complete.")

    async def embed(self, req: EmbeddingRequest, target: Target) -> JSON:
        if any(not isinstance(i, str) for i in req.input):
            raise InvalidRequest("Ollama upstreams embed text, not token lists.", param="input")
        body: dict[str, Any] = {"model": target.model, "input": list(req.input)}
        if target.keep_alive is not None:
            body["keep_alive"] = target.keep_alive
        # Ollama's own fields, from its door: its upstream keeps them.
        body.update((k, v) for k, v in req.extra.items() if k in _EMBED_FIELDS)
        data = await self.http.post_json("api/embed", body)
        if not isinstance(data, dict) or not isinstance(data.get("embeddings"), list):
            raise UpstreamError("Ollama's embedding reply is malformed.")
        # OpenAI's base64 form is little-endian float32, which array("f") is on every platform we run on.
        as_base64 = req.extra.get("encoding_format") == "base64"
        vectors = [
            base64.b64encode(array("f", v).tobytes()).decode() if as_base64 else v for v in data["embeddings"]
        ]
        tokens = int(data.get("prompt_eval_count") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def preload(self, target: Target) -> None:
        """Load the model now (an empty chat request), so the first user does not pay for it."""
        body: dict[str, Any] = {"model": target.model}
        if target.keep_alive is not None:
            body["keep_alive"] = target.keep_alive
        await self.http.post_json("api/chat", body)

    async def models(self) -> list[str]:
        return [m["name"] for m in await self.tags()]

    async def tags(self) -> list[JSON]:
        """The server's /api/tags entries (size, digest, details), for Ollama's door."""
        data = await self.http.get_json("api/tags")
        return list(data.get("models") or ()) if isinstance(data, dict) else []

    async def show(self, model: str) -> JSON:
        """The server's /api/show for one of its models."""
        return await self.http.post_json("api/show", {"model": model})

    async def running(self) -> list[JSON]:
        """The server's /api/ps entries: the models loaded now."""
        data = await self.http.get_json("api/ps")
        return list(data.get("models") or ()) if isinstance(data, dict) else []

    async def health(self) -> bool:
        await self.http.get_json("api/version")
        return True

    async def close(self) -> None:
        await self.http.close()
