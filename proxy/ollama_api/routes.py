"""``POST /api/chat`` and ``/api/generate``: Ollama's bodies through the chain ``/v1/chat/completions`` uses.

Only the decoding of the request and the encoding of the reply differ from the OpenAI door: the ``Call``,
the chain (limits, classifier, cache, ...), the router, the commit point, the disconnect watch and the trace
(whose ``route`` names the door in the access log and the metrics) are the same ``proxy.door.ChatRoute``.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import replace

from proxy.asgi import encode_headers
from proxy.errors import InvalidRequest
from proxy.ollama_api.decode import DoorRequest
from proxy.ollama_api.encode import OllamaEncoder, loaded
from proxy.ollama_api.errors import error_body as ollama_error_body
from proxy.ollama_api.errors import error_line
from proxy.types import Call, ChatRequest, Completion, Trace
from proxy.upstream.router import Router
from proxy.upstream.warmup import Preloadable

JSON_HEADERS = encode_headers([("content-type", "application/json; charset=utf-8")])
NDJSON_HEADERS = encode_headers([("content-type", "application/x-ndjson"), ("x-accel-buffering", "no")])
Decoder = Callable[[bytes, Container[str]], DoorRequest]


class OllamaChat:
    """One of Ollama's generating routes: ``parse`` tells chat from generate; replies are Ollama's JSON and
    NDJSON, and a request with nothing to generate loads (or unloads) the model."""

    json_headers = JSON_HEADERS
    stream_headers = NDJSON_HEADERS
    error_body = staticmethod(ollama_error_body)
    error_frame = staticmethod(error_line)

    def __init__(self, router: Router, parse: Decoder, *, generate: bool) -> None:
        self.router = router
        self.aliases = router.models
        self.parse = parse
        self.generate = generate

    def decode(self, body: bytes, trace: Trace) -> tuple[ChatRequest | None, DoorRequest]:
        door = self.parse(body, self.aliases)
        trace.model = door.alias
        return door.request, door

    async def answer(self, state: DoorRequest, trace: Trace) -> bytes:
        await self._load(state)
        return loaded(state.name, generate=self.generate, unload=state.unload)

    def whole(self, call: Call, state: DoorRequest, reply: Completion) -> bytes:
        return OllamaEncoder(state.name, generate=self.generate, started=call.trace.started).completion(reply)

    def writer(self, call: Call, state: DoorRequest) -> OllamaEncoder:
        return OllamaEncoder(state.name, generate=self.generate, started=call.trace.started)

    async def _load(self, door: DoorRequest) -> None:
        """A request with nothing to generate loads (or unloads) the alias's first model on its server."""
        target = self.router.targets(door.alias)[0]
        adapter = self.router.upstreams[target.upstream].adapter
        if isinstance(adapter, Preloadable):
            keep_alive = 0 if door.unload else door.keep_alive
            await adapter.preload(
                replace(target, keep_alive=keep_alive if keep_alive is not None else target.keep_alive)
            )
        elif door.unload:
            raise InvalidRequest(
                f"The model '{door.name}' is served by an upstream that keeps its models loaded; it "
                "cannot be unloaded through Fluido.",
                param="keep_alive",
            )
        # Other servers (vLLM, llama.cpp) keep their model loaded: it is there already.
