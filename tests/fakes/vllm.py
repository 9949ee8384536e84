"""Fake vLLM OpenAI-compatible server (also stands in for llama.cpp's server)."""

from __future__ import annotations

import time
import uuid
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from ._server import FakeServer, count_words, counts_disconnects, fake_embedding, json_response, split_pieces

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    501: "NotImplementedError",
}
STREAM_OPTIONS_ERROR = "Stream options can only be defined when `stream=True`."


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's ErrorResponse: {"error": {message, type, param, code}}."""
    kind = _ERROR_TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return json_response(error_body(status, message, param), status=status)


class FakeVLLM(FakeServer):
    """vLLM's OpenAI server: /v1/chat/completions, /v1/embeddings, /v1/models,
    /health, /tokenize, /version.

    Constructor: FakeVLLM(models=["Qwen/Qwen2.5-0.5B-Instruct"], api_key=None).
    With api_key set, every /v1 path needs "Authorization: Bearer <api_key>" and
    otherwise gets vLLM's bare 401 {"error": "Unauthorized"}; /health, /tokenize
    and /version stay open, as in vLLM. Common switches: see FakeServer (reply
    defaults to "Hello from fake vLLM."). vLLM-only switches:

    reasoning: str | None    reasoning text, streamed first (delta[reasoning_field])
                             and returned as message[reasoning_field]
    reasoning_field: str     "reasoning_content" (default) or "reasoning" (newer vLLM)
    healthy: bool            /health answers 200 (True) or 503 (False)
    frame_separator: str     what ends each SSE frame ("\\n\\n"; try "\\r\\n\\r\\n")
    max_model_len: int       reported by /tokenize and /v1/models
    honours_n: bool          n > 1 gives n choices (vLLM); False ignores n (llama-cpp-python)
    json_schema: str         "native": response_format json_schema is taken (vLLM);
                             "json_object_schema": only {"type": "json_object", "schema"} is, and
                             json_schema gets llama-cpp-python's 500 "internal_server_error"
    fail_type: str | None    error.type in the fail_status body (default: vLLM's for the status)
    """

    def __init__(self, models: list[str] | None = None, api_key: str | None = None) -> None:
        super().__init__(models or ["Qwen/Qwen2.5-0.5B-Instruct"], "Hello from fake vLLM.")
        self.api_key = api_key
        self.reasoning: str | None = None
        self.reasoning_field = "reasoning_content"
        self.healthy = True
        self.frame_separator = "\n\n"
        self.max_model_len = 4096
        self.honours_n = True
        self.json_schema = "native"
        self.fail_type: str | None = None

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/embeddings", self._embeddings),
            web.get("/v1/models", self._models),
            web.get("/health", self._health),
            web.post("/tokenize", self._tokenize),
            web.get("/version", self._version),
        ]

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.api_key

    async def _parse(self, request: web.Request, record: bool = True) -> dict[str, Any] | web.Response:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            body, problem = None, f"JSON decode error: {exc}"
        else:
            problem = "" if isinstance(body, dict) else "Input should be a valid dictionary"
        if record and isinstance(body, dict):
            self._record(request, body)
        # vLLM's key check is a middleware that runs before the body is parsed;
        # recording first still lets tests see what a rejected caller sent.
        if request.path.startswith("/v1") and not self._authorized(request):
            return json_response({"error": "Unauthorized"}, status=401)
        return _error(400, problem) if problem else body

    def _check_model(self, body: dict[str, Any]) -> tuple[str, web.Response | None]:
        model = body.get("model") or self.models[0]  # vLLM falls back to the served model
        if model not in self.models:
            return model, _error(404, f"The model `{model}` does not exist.", "model")
        return model, None

    def _frame(self, obj: Any) -> bytes:
        return (
            b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + self.frame_separator.encode()
        )

    # -- /v1/chat/completions -------------------------------------------
    @counts_disconnects
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        stream = bool(body.get("stream"))
        if body.get("stream_options") and not stream:  # empty {} passes, as in vLLM
            return _error(400, STREAM_OPTIONS_ERROR, "stream_options")
        await self._first_byte(request, body)
        if self.fail_status is not None:
            failure = error_body(self.fail_status, HTTPStatus(self.fail_status).phrase)
            if self.fail_type is not None:
                failure["error"]["type"] = self.fail_type
            return json_response(failure, status=self.fail_status)
        model, err = self._check_model(body)
        if err is not None:
            return err
        fmt = body.get("response_format")
        if (
            self.json_schema == "json_object_schema"
            and isinstance(fmt, dict)
            and fmt.get("type") == "json_schema"
        ):
            # llama-cpp-python turns its request validation errors into this 500.
            problem = "1 validation error: response_format.type: Input should be 'text' or 'json_object'"
            return json_response(
                {"error": {"message": problem, "type": "internal_server_error", "param": None, "code": None}},
                status=500,
            )
        n = body.get("n") if self.honours_n and isinstance(body.get("n"), int) else 1

        deltas = self._plan()
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "tool_calls" if self.tool_calls else "stop"
        if isinstance(limit, int) and 0 < limit < len(deltas):
            deltas, finish = deltas[:limit], "length"
        usage = {
            "prompt_tokens": count_words(body.get("messages")),
            "completion_tokens": len(deltas),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage["completion_tokens"] *= n
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not stream:
            return self._whole(request, rid, created, model, deltas, finish, usage, n)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], reason: str | None = None, index: int = 0) -> bytes:
            obj: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}],
            }
            if include_usage:  # OpenAI's shape: null on every chunk but the last
                obj["usage"] = None
            return self._frame(obj)

        def tail() -> list[bytes]:
            frames = [chunk({}, finish, i) for i in range(n)]
            if include_usage:
                last = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
                frames.append(self._frame(last | {"choices": [], "usage": usage}))
            return [*frames, self._frame(b"[DONE]")]

        internal = error_body(500, "Internal server error")
        return await self._stream(
            request,
            content_type="text/event-stream; charset=utf-8",
            head=[chunk({"role": "assistant", "content": ""}, None, i) for i in range(n)],
            pieces=[chunk(d, None, i) for d in deltas for i in range(n)],
            tail=tail,
            error=[self._frame(internal), self._frame(b"[DONE]")],
            malformed=self._frame(b'{"id": "' + rid.encode() + b'", "choices": [{'),
            cut=[self._frame(b"[DONE]")],
        )

    def _plan(self) -> list[dict[str, Any]]:
        """Stream deltas: reasoning, then content or tool calls the way vLLM's parsers
        send them (id/type/name once, then argument fragments)."""
        deltas: list[dict[str, Any]] = []
        if self.reasoning:
            deltas += [{self.reasoning_field: p} for p in split_pieces(self.reasoning)]
        if not self.tool_calls:
            return deltas + [{"content": p} for p in split_pieces(self.reply)]
        for i, call in enumerate(self.tool_calls):
            head = {"index": i, "id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function"}
            deltas.append({"tool_calls": [head | {"function": {"name": call["name"], "arguments": ""}}]})
            args = orjson.dumps(call.get("arguments", {})).decode()
            cut = max(len(args) // 3, 1)
            for frag in (args[:cut], args[cut : 2 * cut], args[2 * cut :]):
                if frag:
                    deltas.append({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
        return deltas

    def _whole(
        self,
        request: web.Request,
        rid: str,
        created: int,
        model: str,
        deltas: list[dict[str, Any]],
        finish: str,
        usage: dict[str, int],
        n: int = 1,
    ) -> web.Response:
        if self.drop_after is not None:
            self._drop(request)
            return web.Response(status=499)
        if self.error_after is not None:
            return _error(500, "Internal server error")
        calls: dict[int, dict[str, Any]] = {}
        for d in deltas:
            for tc in d.get("tool_calls", []):
                call = calls.setdefault(tc["index"], {"id": tc.get("id"), "type": "function", "function": {}})
                fn = call["function"]
                fn.setdefault("name", tc["function"].get("name"))
                fn["arguments"] = fn.get("arguments", "") + tc["function"].get("arguments", "")
        text = "".join(d.get("content", "") for d in deltas)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if calls and not text else text,
            "tool_calls": [calls[i] for i in sorted(calls)],  # vLLM always sends the list
        }
        if self.reasoning:
            message[self.reasoning_field] = "".join(d.get(self.reasoning_field, "") for d in deltas)
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
        }
        body = {"id": rid, "object": "chat.completion", "created": created, "model": model}
        choices = [choice | {"index": i} for i in range(n)]
        return json_response(body | {"choices": choices, "usage": usage})

    # -- other endpoints ------------------------------------------------
    @counts_disconnects
    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        await self._first_byte(request, body)
        if self.fail_status is not None:
            return _error(self.fail_status, HTTPStatus(self.fail_status).phrase)
        model, err = self._check_model(body)
        if err is not None:
            return err
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            return _error(400, "input must be a string or a list of strings", "input")
        tokens = sum(max(len(t.split()), 1) for t in inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(inputs)
        ]
        return json_response(
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return json_response({"error": "Unauthorized"}, status=401)
        created = int(time.time())
        data = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": m,
                "parent": None,
                "max_model_len": self.max_model_len,
            }
            for m in self.models
        ]
        return json_response({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": "0.11.0"})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await self._parse(request, record=False)
        if isinstance(body, web.Response):
            return body
        _, err = self._check_model(body)
        if err is not None:
            return err
        if "messages" in body:
            count = count_words(body["messages"])
        else:
            count = len(str(body.get("prompt", "")).split())
        tokens = [1000 + i for i in range(count)]  # ids are meaningless here; count matters
        return json_response(
            {"count": count, "max_model_len": self.max_model_len, "tokens": tokens, "token_strs": None}
        )
