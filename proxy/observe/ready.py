"""GET /ready: can Fluido serve its main model alias right now?

One cheap check per upstream (Ollama: /api/version; OpenAI-compatible: /v1/models), each with its latency,
cached for a few seconds so frequent probes cost the upstreams nothing. Ready (200) when at least one target
of the configured alias can serve; otherwise 503 with the failing checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.asgi import JSON_TYPE, send_bytes
from proxy.config_upstreams import ModelConfig
from proxy.errors import UpstreamError
from proxy.upstream import Upstream

CHECK_TIMEOUT = 2.0


async def check_upstream(up: Upstream) -> dict[str, Any]:
    """One upstream's state: ``ok``, ``latency_ms``, its circuit, and the error if any."""
    state: dict[str, Any] = {"ok": False, "circuit": up.breaker.state}
    if up.launcher is not None and not up.launcher.running:
        # Not started yet: Fluido launches it on demand, so it is ready if it can be launched.
        state.update(ok=up.launcher.launchable(), standby=True)
        return state
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await up.adapter.health()
        state["ok"] = state["circuit"] != "open"
    except (UpstreamError, TimeoutError) as exc:
        state["error"] = exc.message if isinstance(exc, UpstreamError) else "timed out"
    state["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
    return state


@dataclass(frozen=True, slots=True)
class Dependency:
    """A store Fluido uses (Redis, Chroma): ``probe`` raises when it is unreachable. A ``required`` one
    makes Fluido unready when down; an optional one is reported, and Fluido serves without it."""

    probe: Callable[[], Awaitable[None]]
    required: bool


async def check_dependency(dep: Dependency) -> dict[str, Any]:
    started = time.monotonic()
    state: dict[str, Any] = {"ok": True, "required": dep.required}
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await dep.probe()
    except Exception as exc:  # each store's own error type; the message is what an operator needs
        state.update(ok=False, error=str(exc) or type(exc).__name__)
    state["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
    return state


class Readiness:
    """The /ready endpoint, with its results cached for ``ttl`` seconds and shared by concurrent probes."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        model: ModelConfig,
        ttl: float,
        dependencies: Mapping[str, Dependency] | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.model = model
        self.ttl = ttl
        self.dependencies = dependencies or {}
        self._cached: tuple[float, int, bytes] | None = None
        self._running: asyncio.Task[tuple[float, int, bytes]] | None = None

    async def _evaluate(self) -> tuple[float, int, bytes]:
        names = list(self.upstreams)
        results = await asyncio.gather(*(check_upstream(self.upstreams[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        deps = dict(
            zip(
                self.dependencies,
                await asyncio.gather(*map(check_dependency, self.dependencies.values())),
                strict=True,
            )
        )
        ready = any(checks[t.upstream]["ok"] for t in self.model.targets)
        ready = ready and all(d["ok"] for d in deps.values() if d["required"])
        body = {
            "status": "ready" if ready else "unavailable",
            "model": self.model.alias,
            "checks": checks,
            "dependencies": deps,
        }
        return time.monotonic(), 200 if ready else 503, orjson.dumps(body)

    async def result(self) -> tuple[int, bytes]:
        cached = self._cached
        if cached is None or time.monotonic() - cached[0] > self.ttl:
            if self._running is None:
                self._running = asyncio.create_task(self._evaluate())
                self._running.add_done_callback(lambda _: setattr(self, "_running", None))
            cached = self._cached = await asyncio.shield(self._running)
        return cached[1], cached[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await self.result()
        await send_bytes(send, status, body, [JSON_TYPE])
