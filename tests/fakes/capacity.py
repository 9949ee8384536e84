"""A model server with a fixed number of slots: the stand-in for a small GPU in overload tests.

A request waits (first come, first served) for one of ``slots`` slots, spends ``prefill_base_s +
prefill_per_token_s * prompt_tokens`` before its first token, then streams ``max_tokens`` tokens (or
``output_tokens``) ``itl_s`` apart. Prompt tokens are whitespace words, as in the other fakes.

Modes: ``vllm`` (``/metrics`` with ``vllm:num_requests_running`` / ``vllm:num_requests_waiting``),
``llamacpp`` (``/props`` ``total_slots``, ``/slots``, ``/metrics`` ``llamacpp:requests_processing`` /
``llamacpp:requests_deferred``) and ``ollama`` (``/api/chat`` NDJSON, ``/api/tags``, ``/api/version``, no
``/metrics``, and a bounded queue answering Ollama's 503 "server busy"). Every mode serves
``/v1/chat/completions`` and ``/v1/models``; ``/_fake/stats`` and ``/_fake/config`` read the counters and
change the timings of a fake running as its own process:

    python -m tests.fakes.capacity --slots 4 --itl-ms 5 --prefill-ms 20 --port 9100

In a test: ``async with FakeCapacity(4, itl_s=0.005) as fake:`` (or ``fake.start_in_thread()``), then
``fake.slots = 2`` at any time, and ``fake.max_in_flight``, ``fake.utilization()``, ``fake.served``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from . import _capacity_info as info
from . import _capacity_wire as wire
from ._server import FakeServer, count_words, counts_disconnects, json_response
from ._slots import SlotPool

MODES = ("vllm", "llamacpp", "ollama")
OLLAMA_MAX_QUEUE = 512  # OLLAMA_MAX_QUEUE's default
_TUNABLE = ("slots", "prefill_base_s", "prefill_per_token_s", "itl_s", "output_tokens", "max_queue")


@dataclass(frozen=True, slots=True)
class Served:
    """One request the fake admitted to a slot (time.monotonic() seconds)."""

    arrived: float
    started: float  # got its slot
    first_token: float  # 0.0 if it never got that far
    finished: float
    prompt_tokens: int
    output_tokens: int  # tokens sent
    completed: bool  # every token sent and the stream ended normally


class FakeCapacity(FakeServer):
    """Fixed-capacity server. Switches (plain attributes, changeable while it runs; ``slots`` too):

    slots, prefill_base_s, prefill_per_token_s, itl_s, output_tokens   timings and size, see above
    load_factor: float      ITL is multiplied by 1 + (load_factor - 1) * running / slots (batching cost)
    max_queue: int | None   waiting requests beyond it get 503 (Ollama's text in ollama mode)
    early_head: bool        stream: send status and the role chunk on arrival, before the slot
                            (by default they go with the first token, as vLLM does)
    omit_finish: bool       stream: end with data: [DONE] but no finish_reason (a truncated answer)
    fail_status, drop_after, error_after: see FakeServer (drop/error after N content tokens)

    Counters: requests_seen, rejected, completed, in_flight, waiting, max_in_flight, max_waiting,
    busy_seconds(), utilization(), served (list of Served), disconnects.
    """

    handler_cancellation = True  # a queued request whose client left must leave the queue at once

    def __init__(
        self,
        slots: int = 4,
        *,
        mode: str = "vllm",
        models: list[str] | None = None,
        prefill_base_s: float = 0.02,
        prefill_per_token_s: float = 0.0002,
        itl_s: float = 0.005,
        output_tokens: int = 16,
        max_queue: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        super().__init__(models or ["capacity-model"], "")
        self.mode = mode
        self.pool = SlotPool(slots)
        self.prefill_base_s = prefill_base_s
        self.prefill_per_token_s = prefill_per_token_s
        self.itl_s = itl_s
        self.output_tokens = output_tokens
        self.load_factor = 1.0
        self.max_queue = OLLAMA_MAX_QUEUE if max_queue is None and mode == "ollama" else max_queue
        self.early_head = False
        self.omit_finish = False
        self.requests_seen = 0
        self.rejected = 0
        self.completed = 0
        self.served: list[Served] = []
        self._started_at = time.monotonic()
        self._decoded: dict[int, int] = {}  # slot id -> tokens sent so far (for /slots)

    # -- counters ---------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.pool.limit

    @slots.setter
    def slots(self, value: int) -> None:
        self.pool.limit = value

    @property
    def in_flight(self) -> int:
        return self.pool.running

    @property
    def waiting(self) -> int:
        return self.pool.waiting

    @property
    def max_in_flight(self) -> int:
        return self.pool.max_running

    @property
    def max_waiting(self) -> int:
        return self.pool.max_waiting

    def busy_seconds(self) -> float:
        return self.pool.busy_seconds()

    def utilization(self, since: float | None = None) -> float:
        """Share of slot time spent serving since ``since`` (default: since the fake was built)."""
        wall = time.monotonic() - (self._started_at if since is None else since)
        return self.busy_seconds() / (self.slots * wall) if wall > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        tunables = {k: getattr(self, k) for k in _TUNABLE}
        return tunables | {
            "mode": self.mode,
            "requests_seen": self.requests_seen,
            "rejected": self.rejected,
            "completed": self.completed,
            "disconnects": self.disconnects,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "max_in_flight": self.max_in_flight,
            "max_waiting": self.max_waiting,
            "busy_seconds": self.busy_seconds(),
            "uptime_s": time.monotonic() - self._started_at,
        }

    # -- routes -------------------------------------------------------------
    def _routes(self) -> list[web.RouteDef]:
        routes = [
            web.post("/v1/chat/completions", self._openai_chat),
            web.get("/v1/models", self._models),
            web.get("/health", self._health),
            web.get("/_fake/stats", self._stats),
            web.post("/_fake/config", self._config),
        ]
        if self.mode == "vllm":
            routes.append(web.get("/metrics", self._vllm_metrics))
        elif self.mode == "llamacpp":
            routes += [
                web.get("/metrics", self._llamacpp_metrics),
                web.get("/props", self._props),
                web.get("/slots", self._slots),
            ]
        else:
            routes += [
                web.get("/", self._ollama_root),
                web.post("/api/chat", self._ollama_chat),
                web.get("/api/tags", self._tags),
                web.get("/api/version", self._version),
            ]
        return routes

    @counts_disconnects
    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, wire.OpenAIWire(self.mode))

    @counts_disconnects
    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, wire.OllamaWire())

    async def _chat(self, request: web.Request, fmt: wire.Wire) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await wire.read_json(request)
        if body is None:
            return fmt.error(400, "the request body is not a JSON object")
        self._record(request, body)
        self.requests_seen += 1
        if self.fail_status is not None:
            return fmt.error(self.fail_status, "injected failure")
        model = body.get("model") or self.models[0]
        if model not in self.models:
            return fmt.not_found(model)
        would_wait = self.pool.running >= self.pool.limit or self.pool.waiting > 0
        if would_wait and self.max_queue is not None and self.pool.waiting >= self.max_queue:
            self.rejected += 1
            return fmt.busy()
        prompt = count_words(body.get("messages"))
        planned = fmt.max_tokens(body) or self.output_tokens
        stream = fmt.streams(body)
        reply = fmt.start(request, model, body, prompt) if stream else None
        if reply is not None and self.early_head:
            await reply.open()
        slot = await self.pool.acquire()
        started, first, sent, done = time.monotonic(), 0.0, 0, False
        self._decoded[slot] = 0
        try:
            await self._sleep(request, self.prefill_base_s + self.prefill_per_token_s * prompt)
            if reply is None:  # not streamed: the whole answer after the whole generation
                await self._sleep(request, self._itl() * (planned - 1))
                first, sent, done = time.monotonic(), planned, True
                return fmt.whole(model, wire.words(planned), prompt, fmt.max_tokens(body) is not None)
            await reply.open()
            due = time.monotonic()
            for i, piece in enumerate(wire.words(planned)):
                if i == self.drop_after:
                    self._drop(request)
                    return reply.response
                if i == self.error_after:
                    await reply.error()
                    return reply.response
                if i:
                    due += self._itl()
                    await self._sleep(request, due - time.monotonic())
                await reply.token(piece)
                first = first or time.monotonic()
                sent = self._decoded[slot] = i + 1
            await reply.finish(reason=not self.omit_finish)
            done = True
            return reply.response
        finally:
            self.pool.release(slot)
            del self._decoded[slot]
            self.completed += done
            self.served.append(Served(arrived, started, first, time.monotonic(), prompt, sent, done))

    def _itl(self) -> float:
        return self.itl_s * (1 + (self.load_factor - 1) * self.pool.running / self.pool.limit)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": self.mode} for m in self.models]
        return json_response({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        served = [asdict(s) for s in self.served] if request.query.get("served") else None
        return json_response(self.stats() | ({"served": served} if served is not None else {}))

    async def _config(self, request: web.Request) -> web.Response:
        body = await wire.read_json(request) or {}
        unknown = set(body) - set(_TUNABLE)
        if unknown:
            return json_response({"error": f"unknown settings: {sorted(unknown)}"}, status=400)
        for key, value in body.items():
            setattr(self, key, value)
        return json_response(self.stats())

    # -- upstream-specific introspection ------------------------------------
    async def _vllm_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=info.vllm_metrics(self.models[0], self.in_flight, self.waiting, self.slots))

    async def _llamacpp_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=info.llamacpp_metrics(self.in_flight, self.waiting))

    async def _props(self, request: web.Request) -> web.Response:
        return json_response(info.llamacpp_props(self.models[0], self.slots))

    async def _slots(self, request: web.Request) -> web.Response:
        busy = self.pool.busy_ids
        if request.query.get("fail_on_no_slot") and len(busy) >= self.slots:
            return json_response(info.llamacpp_error(503, "no slot available"), status=503)
        return json_response(info.llamacpp_slots(self.slots, self._decoded))

    async def _ollama_root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _tags(self, request: web.Request) -> web.Response:
        return json_response({"models": [info.ollama_model(m) for m in self.models]})

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": "0.12.0"})


if __name__ == "__main__":
    from ._capacity_cli import main

    main()
