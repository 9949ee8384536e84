"""OpenAI-compatible upstreams: vLLM, llama.cpp's server, and any other ``/v1`` server.

The client's body is passed through with its extras (vLLM's ``top_k``, ``min_p``, structured outputs, ...);
usage is always asked for, so accounting is exact, and the writer drops it if the client did not ask.

Servers that spell a request differently are options of the upstream, not adapters of their own:
``json_schema = "json_object_schema"`` sends OpenAI's ``{"type": "json_schema", "json_schema": {"schema"}}``
as ``{"type": "json_object", "schema"}``, which is what llama-cpp-python's server takes.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    text_chunk,
)
from proxy.writer import message_body

# Fields of Ollama's API (its door, or a client that knows Ollama) with no meaning to an OpenAI server.
OLLAMA_ONLY = frozenset({"options", "keep_alive", "think", "truncate"})
# Ollama options that are sampling parameters of vLLM and llama.cpp's server too, under these names.
_SHARED_OPTIONS = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"}


def from_ollama(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's fields as an OpenAI server's: shared sampling options and ``think``. The rest (``num_ctx``,
    ``keep_alive``, ...) configure Ollama's own runner and are dropped."""
    out: dict[str, Any] = {}
    options = extra.get("options")
    if isinstance(options, dict):
        out.update((_SHARED_OPTIONS[k], v) for k, v in options.items() if k in _SHARED_OPTIONS)
    think = extra.get("think")
    if isinstance(think, bool):
        out["chat_template_kwargs"] = {"enable_thinking": think}
    elif isinstance(think, str):
        out["reasoning_effort"] = think
    return out


def response_format_body(fmt: Mapping[str, JSON], spelling: str) -> Mapping[str, JSON]:
    if spelling != "json_object_schema" or fmt.get("type") != "json_schema":
        return fmt
    spec = fmt.get("json_schema") or {}
    return {"type": "json_object", "schema": spec.get("schema") or {}}


def request_body(req: ChatRequest, target: Target, json_schema: str = "native") -> dict[str, Any]:
    extra = req.extra
    if not OLLAMA_ONLY.isdisjoint(extra):
        extra = {**from_ollama(extra), **{k: v for k, v in extra.items() if k not in OLLAMA_ONLY}}
    body: dict[str, Any] = {**target.options, **req.profile_extra, **extra}
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
        "response_format": response_format_body(req.response_format, json_schema)
        if req.response_format is not None
        else None,
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
    if not choices:
        raise UpstreamError("The upstream's completion has no choices.")
    return Completion(choices=tuple(choices), usage=parse_usage(data.get("usage")))


def _tool_call_deltas(raw: list[Any]) -> tuple[ToolCallDelta, ...]:
    return tuple(
        ToolCallDelta(
            index=t.get("index", i),
            id=t.get("id"),
            name=(t.get("function") or {}).get("name"),
            arguments=(t.get("function") or {}).get("arguments") or "",
        )
        for i, t in enumerate(raw)
    )


def text_event(data: Any) -> Chunk | None:
    """The chunk of the usual event, one choice whose delta is only text (one per token); None for any
    other event, which ``parse_chunks`` reads."""
    if type(data) is dict and type(choices := data.get("choices")) is list and len(choices) == 1:
        c = choices[0]
        if (
            type(c) is dict
            and type(delta := c.get("delta")) is dict
            and len(delta) == 1
            and type(content := delta.get("content")) is str
            and c.get("finish_reason") is None
            and c.get("logprobs") is None
            and data.get("usage") is None
            and "error" not in data
        ):
            return text_chunk(c.get("index", 0), content)
    return None


def parse_chunks(data: Any) -> list[Chunk]:
    """One SSE event -> normalized chunks (one per choice, then one for usage if present)."""
    if (chunk := text_event(data)) is not None:
        return [chunk]
    if not isinstance(data, dict):
        raise UpstreamError("The upstream sent a stream event that is not a JSON object.")
    if "error" in data:
        message, _ = error_message(data)
        raise UpstreamError(f"The upstream failed mid-stream: {message or 'unknown error'}")
    choices = data.get("choices") or []
    chunks = []
    # The general walk: the rarer fields (tool calls, usage) are only looked at when present.
    for c in choices:
        delta = c.get("delta") or {}
        raw_calls = delta.get("tool_calls")
        chunks.append(
            Chunk(
                index=c.get("index", 0),
                role=delta.get("role"),
                content=delta.get("content"),
                reasoning=delta.get("reasoning_content") or delta.get("reasoning"),
                tool_calls=_tool_call_deltas(raw_calls) if raw_calls else (),
                finish_reason=c.get("finish_reason"),
                logprobs=c.get("logprobs"),
            )
        )
    raw_usage = data.get("usage")
    if raw_usage is not None and (usage := parse_usage(raw_usage)):
        chunks.append(Chunk(usage=usage))
    return chunks


class OpenAICompatAdapter:
    """vLLM, llama.cpp and other OpenAI-compatible servers; ``url`` is their ``/v1`` base."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.http = UpstreamHTTP(cfg)
        self.json_schema = cfg.json_schema

    async def chat(self, req: ChatRequest, target: Target) -> Completion:
        body = request_body(req, target, self.json_schema)
        return parse_completion(await self.http.post_json("chat/completions", body))

    async def stream(self, req: ChatRequest, target: Target) -> Stream:
        started: set[int] = set()
        finished: set[int] = set()
        body = request_body(req, target, self.json_schema)
        decoder = SSEDecoder()
        done = False
        # The body is read here, not through a generator of events: a layer less for every token.
        async with self.http.streaming("chat/completions", body) as content:
            while not done and (data := await content.readany()):
                for event in decoder.feed(data):
                    if event == b"[DONE]":
                        # [DONE] only says the server stopped sending: a reply without its finish_reason was
                        # cut short (llama-cpp-python ends a stream this way when another request interrupts
                        # it).
                        done = True
                        break
                    try:
                        parsed = orjson.loads(event)
                    except orjson.JSONDecodeError:
                        raise UpstreamError("The upstream sent a malformed stream event.") from None
                    if (chunk := text_event(parsed)) is not None:  # most events: one token of text
                        started.add(chunk.index)
                        yield chunk
                        continue
                    for chunk in parse_chunks(parsed):
                        if chunk.usage is None:
                            started.add(chunk.index)
                        if chunk.finish_reason is not None:
                            finished.add(chunk.index)
                        yield chunk
        if not finished or finished != started:
            raise UpstreamError("The upstream ended the stream before the reply was complete.")

    async def count_tokens(self, text: str, model: str) -> int:
        """The upstream's own token count of ``text`` (vLLM's /tokenize, beside /v1)."""
        data = await self.http.post_json("../tokenize", {"model": model, "prompt": text})
        if not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise UpstreamError("The upstream's /tokenize reply has no count.")
        return int(data["count"])

    async def embed(self, req: EmbeddingRequest, target: Target) -> JSON:
        body = {
            **{k: v for k, v in req.extra.items() if k not in OLLAMA_ONLY},
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
