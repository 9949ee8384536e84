"""Fake Ollama server speaking the native /api protocol (NDJSON streams)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from ._server import (
    FakeServer,
    count_words,
    counts_disconnects,
    fake_embedding,
    json_response,
    rfc3339_now,
    split_pieces,
)

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_EOF = "an error was encountered while running the model: unexpected EOF"
DEFAULT_KEEP_ALIVE_S = 300.0
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _keep_alive_seconds(value: Any) -> float:
    """Ollama's keep_alive: number = seconds, string = Go duration; negative = forever."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value in ("0", "-0"):
        seconds = 0.0
    elif isinstance(value, str) and re.fullmatch(r"-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value):
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
        seconds = sum(float(n) * _GO_UNITS[u] for n, u in parts)
        seconds = -seconds if value.startswith("-") else seconds
    else:
        raise ValueError(f'time: invalid duration "{value}"')
    return float("inf") if seconds < 0 else seconds


class FakeOllama(FakeServer):
    """Ollama 0.12 native API: /api/chat, /api/embed, /api/tags, /api/show, /api/ps, /api/version.

    Constructor: FakeOllama(models=["llama3.2:1b"]). Common switches: see FakeServer
    (reply defaults to "Hello from fake Ollama."). Ollama-only switches:

    thinking: str | None     streamed first as message.thinking when the request has
                             a truthy "think"
    done_reason: str         done_reason of a normal finish ("stop"; tests may set
                             "length"); options.num_predict cuts the reply and forces "length"
    load_duration_ns: int    load_duration reported in final lines
    queue_full: bool         503 with Ollama's "server busy" error (OLLAMA_MAX_QUEUE)
    version: str             answer of /api/version
    loaded: dict[str, float] model -> unload time (time.time(); inf = forever); filled
                             by chats, preloads and embeds, emptied by keep_alive 0;
                             /api/ps lists it
    """

    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__(models or ["llama3.2:1b"], "Hello from fake Ollama.")
        self.thinking: str | None = None
        self.done_reason = "stop"
        self.load_duration_ns = 1_000_000
        self.queue_full = False
        self.version = "0.12.0"
        self.loaded: dict[str, float] = {}

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._root),
            web.post("/api/chat", self._chat),
            web.post("/api/embed", self._embed),
            web.get("/api/tags", self._tags),
            web.post("/api/show", self._show),
            web.get("/api/ps", self._ps),
            web.get("/api/version", self._version),
        ]

    # -- shared checks ---------------------------------------------------
    async def _parse(self, request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        if not raw:
            return _error(400, "missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "invalid character looking for beginning of value")
        if not isinstance(body, dict):
            return _error(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
        self._record(request, body)
        await self._first_byte(request, body)
        if self.fail_status is not None:
            # Ollama's bodies are {"error": str}; reuse its real texts where it has them.
            known = {500: RUNNER_EOF, 503: QUEUE_FULL}.get(self.fail_status)
            return _error(self.fail_status, known or HTTPStatus(self.fail_status).phrase.lower())
        return body

    def _load(self, model: str, keep_alive: float) -> None:
        self.loaded[model] = time.time() + keep_alive

    # -- /api/chat ------------------------------------------------------
    @counts_disconnects
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic_ns()
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        model = body.get("model") or ""
        if not model:
            return _error(400, "model is required")
        if model not in self.models:
            # 0.12 checks the manifest before scheduling; older builds said
            # 'model "X" not found, try pulling it first' here (still used by /api/embed).
            return _error(404, f"model '{model}' not found")
        try:
            keep_alive = _keep_alive_seconds(body.get("keep_alive"))
        except ValueError as exc:
            return _error(400, str(exc))
        messages = body.get("messages") or []
        if not messages and keep_alive == 0:
            self.loaded.pop(model, None)
            return json_response(_done_message(model, "unload"))
        if self.queue_full:
            return _error(503, QUEUE_FULL)
        self._load(model, keep_alive)
        if not messages:  # preload: always a plain JSON answer, even for stream requests
            return json_response(_done_message(model, "load"))

        pieces, done_reason = self._plan(body)
        count = len(pieces)

        def final(message: dict[str, Any]) -> dict[str, Any]:
            total = max(time.monotonic_ns() - started, 1)
            eval_ns = max(int(self.delay_between * 1e9) * max(count - 1, 0), count, 1)
            if keep_alive == 0:
                self.loaded.pop(model, None)
            return {
                "model": model,
                "created_at": rfc3339_now(),
                "message": message,
                "done": True,
                "done_reason": done_reason,
                "total_duration": total + self.load_duration_ns,
                "load_duration": self.load_duration_ns,
                "prompt_eval_count": count_words(messages),
                "prompt_eval_duration": max(int(self.delay_first * 1e9), 1),
                "eval_count": count,
                "eval_duration": eval_ns,
            }

        if body.get("stream", True) is False:
            return self._whole(request, pieces, final)
        if self.error_after == 0:  # nothing written yet: Ollama answers a plain 500
            return _error(500, RUNNER_EOF)
        lines = [
            _line({"model": model, "created_at": rfc3339_now(), "message": m, "done": False}) for m in pieces
        ]
        return await self._stream(
            request,
            content_type="application/x-ndjson",
            head=[],
            pieces=lines,
            tail=lambda: [_line(final({"role": "assistant", "content": ""}))],
            error=[_line({"error": RUNNER_EOF})],
            malformed=b'{"model": "' + model.encode() + b'", "message": {"role"\n',
        )

    def _plan(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The assistant messages to stream, cut by options.num_predict."""
        pieces: list[dict[str, Any]] = []
        if self.thinking and body.get("think"):
            pieces += [
                {"role": "assistant", "content": "", "thinking": p} for p in split_pieces(self.thinking)
            ]
        if self.tool_calls:
            calls = [
                {"function": {"index": i, "name": c["name"], "arguments": c.get("arguments", {})}}
                for i, c in enumerate(self.tool_calls)
            ]
            pieces.append({"role": "assistant", "content": "", "tool_calls": calls})
        else:
            pieces += [{"role": "assistant", "content": p} for p in split_pieces(self.reply)]
        options = body.get("options") or {}
        limit = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(limit, int) and 0 < limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, self.done_reason

    def _whole(
        self,
        request: web.Request,
        pieces: list[dict[str, Any]],
        final: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> web.StreamResponse:
        if self.drop_after is not None:
            self._drop(request)
            return web.Response(status=499)
        if self.error_after is not None:
            return _error(500, RUNNER_EOF)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(p["content"] for p in pieces)}
        thinking = "".join(p.get("thinking", "") for p in pieces)
        if thinking:
            message["thinking"] = thinking
        calls = [c for p in pieces for c in p.get("tool_calls", [])]
        if calls:
            message["tool_calls"] = calls
        return json_response(final(message))

    # -- /api/embed -----------------------------------------------------
    @counts_disconnects
    async def _embed(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic_ns()
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = raw
        elif raw is None:
            inputs = []
        else:
            return _error(400, "invalid input type")
        model = body.get("model") or ""
        if not model:
            return _error(400, "model is required")
        if model not in self.models:
            return _error(404, f'model "{model}" not found, try pulling it first')
        if self.queue_full:
            return _error(503, QUEUE_FULL)
        try:
            self._load(model, _keep_alive_seconds(body.get("keep_alive")))
        except ValueError as exc:
            return _error(400, str(exc))
        if not inputs:
            return json_response({"model": model, "embeddings": []})
        return json_response(
            {
                "model": model,
                "embeddings": [fake_embedding(text) for text in inputs],
                "total_duration": max(time.monotonic_ns() - started, 1) + self.load_duration_ns,
                "load_duration": self.load_duration_ns,
                "prompt_eval_count": sum(max(len(t.split()), 1) for t in inputs),
            }
        )

    # -- metadata endpoints --------------------------------------------
    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": self.version})

    async def _tags(self, request: web.Request) -> web.Response:
        return json_response(
            {"models": [_model_entry(m) | {"modified_at": rfc3339_now()} for m in self.models]}
        )

    async def _show(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        model = body.get("model") or body.get("name") or ""
        if model not in self.models:
            return _error(404, f"model '{model}' not found")
        entry = _model_entry(model)
        return json_response(
            {
                "modelfile": f"FROM {model}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": entry["details"],
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                "capabilities": ["completion", "tools"],
                "modified_at": rfc3339_now(),
            }
        )

    async def _ps(self, request: web.Request) -> web.Response:
        now = time.time()
        live = sorted(((m, t) for m, t in self.loaded.items() if t > now), key=lambda mt: -mt[1])
        return json_response(
            {
                "models": [
                    _model_entry(m)
                    | {"expires_at": _expiry(t), "size_vram": 1_300_000_000, "context_length": 4096}
                    for m, t in live
                ]
            }
        )


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _done_message(model: str, reason: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": rfc3339_now(),
        "message": {"role": "assistant", "content": ""},
        "done_reason": reason,
        "done": True,
    }


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "size": 1_300_000_000,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "1.2B",
            "quantization_level": "Q8_0",
        },
    }


def _expiry(unix: float) -> str:
    if unix == float("inf"):  # keep_alive < 0: Ollama shows a date centuries away
        return "2318-04-11T23:47:16.854775807Z"
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")
