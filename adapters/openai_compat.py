"""OpenAI-compatible upstreams: vLLM, llama.cpp's server, and any other ``/v1`` server.

The client's body is passed through with its extras (vLLM's ``top_k``, ``min_p``, structured outputs, ...);
usage is always asked for, so accounting is exact, and the writer drops it if the client did not ask.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson

from adapters.decoders import SSEDecoder
from adapters.http import UpstreamHTTP, error_message
from proxy.config_upstreams import UpstreamConfig
from proxy.errors import UpstreamError
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
from proxy.writer import message_body


def request_body(req: ChatRequest, target: Target) -> dict[str, Any]:
    body: dict[str, Any] = {**target.options, **req.profile_extra, **req.extra}
    body["model"] = target.model
    body["messages"] = [message_body(m) for m in req.messages]
    optional = {
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "tool_choice": req.tool_choice,
        "response_format": req.response_format,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    if req.stop:
        body["stop"] = list(req.stop)
    if req.n != 1:
        body["n"] = req.n
    if req.tools:
        body["tools"] = list(req.tools)
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _reasoning(raw: dict[str, Any]) -> str | None:
    # vLLM says reasoning_content; Ollama's /v1 and some others say reasoning.
    return raw.get("reasoning_content") or raw.get("reasoning")


def parse_completion(data: Any) -> Completion:
    try:
        choices = []
        for c in data["choices"]:
            msg = c["message"]
            calls = tuple(
                ToolCall(
                    id=t.get("id") or "", name=t["function"]["name"], arguments=t["function"]["arguments"]
                )
                for t in msg.get("tool_calls") or ()
            )
            message = Message(
                role=msg.get("role") or "assistant",
                content=msg.get("content"),
                tool_calls=calls,
                reasoning_content=_reasoning(msg),
            )
            choices.append(Choice(c.get("index", 0), message, c.get("finish_reason"), c.get("logprobs")))
    except (KeyError, TypeError) as exc:
        raise UpstreamError(f"The upstream's completion is malformed (missing {exc}).") from None
    return Completion(choices=tuple(choices), usage=parse_usage(data.get("usage")))


def parse_chunks(data: Any) -> list[Chunk]:
    """One SSE event -> normalized chunks (one per choice, then one for usage if present)."""
    if not isinstance(data, dict):
        raise UpstreamError("The upstream sent a stream event that is not a JSON object.")
    if "error" in data:
        message, _ = error_message(data)
        raise UpstreamError(f"The upstream failed mid-stream: {message or 'unknown error'}")
    chunks = []
    for c in data.get("choices") or ():
        delta = c.get("delta") or {}
        calls = tuple(
            ToolCallDelta(
                index=t.get("index", i),
                id=t.get("id"),
                name=(t.get("function") or {}).get("name"),
                arguments=(t.get("function") or {}).get("arguments") or "",
            )
            for i, t in enumerate(delta.get("tool_calls") or ())
        )
        chunks.append(
            Chunk(
                index=c.get("index", 0),
                role=delta.get("role"),
                content=delta.get("content"),
                reasoning=_reasoning(delta),
                tool_calls=calls,
                finish_reason=c.get("finish_reason"),
                logprobs=c.get("logprobs"),
            )
        )
    if usage := parse_usage(data.get("usage")):
        chunks.append(Chunk(usage=usage))
    return chunks


class OpenAICompatAdapter:
    """vLLM, llama.cpp and other OpenAI-compatible servers; ``url`` is their ``/v1`` base."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.http = UpstreamHTTP(cfg)

    async def chat(self, req: ChatRequest, target: Target) -> Completion:
        return parse_completion(await self.http.post_json("chat/completions", request_body(req, target)))

    async def stream(self, req: ChatRequest, target: Target) -> Stream:
        finished = False
        body = request_body(req, target)
        async with aclosing(self.http.frames("chat/completions", body, SSEDecoder())) as events:
            async for event in events:
                if event == b"[DONE]":
                    return
                try:
                    data = orjson.loads(event)
                except orjson.JSONDecodeError:
                    raise UpstreamError("The upstream sent a malformed stream event.") from None
                for chunk in parse_chunks(data):
                    finished = finished or chunk.finish_reason is not None
                    yield chunk
        if not finished:
            raise UpstreamError("The upstream ended the stream before the reply was complete.")

    async def count_tokens(self, text: str, model: str) -> int:
        """The upstream's own token count of ``text`` (vLLM's /tokenize, beside /v1)."""
        data = await self.http.post_json("../tokenize", {"model": model, "prompt": text})
        if not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise UpstreamError("The upstream's /tokenize reply has no count.")
        return int(data["count"])

    async def embed(self, req: EmbeddingRequest, target: Target) -> JSON:
        body = {
            **req.extra,
            "model": target.model,
            "input": [list(i) if isinstance(i, tuple) else i for i in req.input],
        }
        return await self.http.post_json("embeddings", body)

    async def models(self) -> list[str]:
        data = await self.http.get_json("models")
        return [m["id"] for m in data.get("data", ())]

    async def health(self) -> bool:
        await self.models()
        return True

    async def close(self) -> None:
        await self.http.close()
