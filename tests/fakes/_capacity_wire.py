"""Wire formats of the fixed-capacity fake: OpenAI SSE (as vLLM, llama.cpp or Ollama's /v1 write it),
Ollama's NDJSON, the upstreams' error bodies and their introspection endpoints."""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import orjson
from aiohttp import web

from ._capacity_info import llamacpp_error
from ._server import _RESPONSE, json_response, rfc3339_now
from .ollama import QUEUE_FULL
from .vllm import error_body as vllm_error_body

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def words(n: int) -> list[str]:
    """n pieces, one token each, carrying their leading space as tokenizers do."""
    return [("" if i == 0 else " ") + _WORDS[i % len(_WORDS)] for i in range(n)]


async def read_json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


class Reply(Protocol):
    response: web.StreamResponse

    async def open(self) -> None: ...
    async def token(self, piece: str) -> None: ...
    async def error(self) -> None: ...
    async def finish(self, reason: bool = True) -> None: ...


class Wire(Protocol):
    def error(self, status: int, message: str) -> web.Response: ...
    def not_found(self, model: str) -> web.Response: ...
    def busy(self) -> web.Response: ...
    def max_tokens(self, body: dict[str, Any]) -> int | None: ...
    def streams(self, body: dict[str, Any]) -> bool: ...
    def start(self, request: web.Request, model: str, body: dict[str, Any], prompt: int) -> Reply: ...
    def whole(self, model: str, pieces: list[str], prompt: int, cut: bool) -> web.Response: ...


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# -- OpenAI-compatible ----------------------------------------------------------
class OpenAIWire:
    """/v1/chat/completions as the mode's server writes it (error bodies differ by server)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def error(self, status: int, message: str) -> web.Response:
        if self.mode == "llamacpp":
            return json_response(llamacpp_error(status, message), status=status)
        if self.mode == "ollama":  # Ollama's /v1 middleware: type by status, no param or code
            kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            return json_response(
                {"error": {"message": message, "type": kind, "param": None, "code": None}}, status
            )
        return json_response(vllm_error_body(status, message), status=status)

    def not_found(self, model: str) -> web.Response:
        return self.error(404, f"The model `{model}` does not exist.")

    def busy(self) -> web.Response:
        return self.error(503, QUEUE_FULL if self.mode == "ollama" else "Service Unavailable")

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))

    def streams(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    def start(self, request: web.Request, model: str, body: dict[str, Any], prompt: int) -> Reply:
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _SSEReply(request, model, prompt, usage, cut=self.max_tokens(body) is not None)

    def whole(self, model: str, pieces: list[str], prompt: int, cut: bool) -> web.Response:
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "length" if cut else "stop",
        }
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
        }
        return json_response(
            head | {"model": model, "choices": [choice], "usage": _usage(prompt, len(pieces))}
        )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _SSEReply:
    def __init__(self, request: web.Request, model: str, prompt: int, usage: bool, cut: bool) -> None:
        self.request, self.prompt, self.usage, self.cut = request, prompt, usage, cut
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}  # fmt: skip
        self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        self.sent = 0

    async def _event(self, obj: Any) -> None:
        await self.response.write(
            b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
        )

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return self.head | {"choices": [choice]} | ({"usage": None} if self.usage else {})

    async def open(self) -> None:
        if self.response.prepared:
            return
        self.request[_RESPONSE] = self.response
        await self.response.prepare(self.request)
        await self._event(self._chunk({"role": "assistant", "content": ""}))

    async def token(self, piece: str) -> None:
        await self._event(self._chunk({"content": piece}))
        self.sent += 1

    async def error(self) -> None:
        await self._event(vllm_error_body(500, "Internal server error"))
        await self._event(b"[DONE]")
        await self.response.write_eof()

    async def finish(self, reason: bool = True) -> None:
        if reason:
            await self._event(self._chunk({}, "length" if self.cut else "stop"))
        if self.usage:
            await self._event(self.head | {"choices": [], "usage": _usage(self.prompt, self.sent)})
        await self._event(b"[DONE]")
        await self.response.write_eof()


# -- Ollama native ----------------------------------------------------------------
class OllamaWire:
    """/api/chat: NDJSON lines, {"error": str} bodies, options.num_predict, stream on by default."""

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"error": message}, status=status)

    def not_found(self, model: str) -> web.Response:
        return self.error(404, f"model '{model}' not found")

    def busy(self) -> web.Response:
        return self.error(503, QUEUE_FULL)

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        options = body.get("options")
        return _positive_int(options.get("num_predict")) if isinstance(options, dict) else None

    def streams(self, body: dict[str, Any]) -> bool:
        return body.get("stream", True) is not False

    def start(self, request: web.Request, model: str, body: dict[str, Any], prompt: int) -> Reply:
        return _NDJSONReply(request, model, prompt, cut=self.max_tokens(body) is not None)

    def whole(self, model: str, pieces: list[str], prompt: int, cut: bool) -> web.Response:
        message = {"role": "assistant", "content": "".join(pieces)}
        return json_response(_ollama_final(model, message, prompt, len(pieces), cut, 0, 0))


def _ollama_final(
    model: str, message: dict[str, Any], prompt: int, count: int, cut: bool, prefill_ns: int, eval_ns: int
) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": rfc3339_now(),
        "message": message,
        "done": True,
        "done_reason": "length" if cut else "stop",
        "total_duration": max(prefill_ns + eval_ns, 1),
        "load_duration": 0,  # always warm: a cold load would be a different experiment
        "prompt_eval_count": prompt,
        "prompt_eval_duration": max(prefill_ns, 1),
        "eval_count": count,
        "eval_duration": max(eval_ns, 1),
    }


class _NDJSONReply:
    def __init__(self, request: web.Request, model: str, prompt: int, cut: bool) -> None:
        self.request, self.model, self.prompt, self.cut = request, model, prompt, cut
        self.response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        self.sent = 0
        self.opened = self.first = 0

    async def _line(self, obj: dict[str, Any]) -> None:
        await self.response.write(orjson.dumps(obj) + b"\n")

    async def open(self) -> None:
        if not self.response.prepared:
            self.request[_RESPONSE] = self.response
            await self.response.prepare(self.request)
            self.opened = time.monotonic_ns()

    async def token(self, piece: str) -> None:
        self.first = self.first or time.monotonic_ns()
        message = {"role": "assistant", "content": piece}
        await self._line(
            {"model": self.model, "created_at": rfc3339_now(), "message": message, "done": False}
        )
        self.sent += 1

    async def error(self) -> None:
        await self._line({"error": "an error was encountered while running the model: unexpected EOF"})
        await self.response.write_eof()

    async def finish(self, reason: bool = True) -> None:  # Ollama's final line always says done
        now = time.monotonic_ns()
        prefill, decode = (self.first or now) - self.opened, now - (self.first or now)
        message = {"role": "assistant", "content": ""}
        await self._line(
            _ollama_final(self.model, message, self.prompt, self.sent, self.cut, prefill, decode)
        )
        await self.response.write_eof()
