"""Model alias -> ordered upstream targets, with fallback before the first byte and per-upstream limits.

The router is the innermost handler of the chain. A target is skipped while its circuit is open; a
retryable failure moves on to the next target; nothing is retried once a stream has produced output,
because by then the client may have seen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import structlog

from proxy.config_upstreams import ModelConfig, UpstreamConfig
from proxy.deadline import Deadline
from proxy.errors import (
    ModelNotFound,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.limits import Bucket, Grant, Limiter, LimiterUnavailable
from proxy.types import (
    JSON,
    Adapter,
    Call,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    Reply,
    Stream,
    Target,
    Trace,
)
from proxy.upstream.breaker import CircuitBreaker
from proxy.upstream.embedded import EmbeddedServer
from proxy.upstream.fanout import all_of, check_choices, checked_stream, merge_completions, merge_streams
from proxy.upstream.idle import IdleWatch

T = TypeVar("T")
log = structlog.get_logger("fluido.router")


@dataclass(slots=True)
class Upstream:
    """One configured upstream server with its adapter, its breaker and, if Fluido runs it, its launcher."""

    cfg: UpstreamConfig
    adapter: Adapter
    breaker: CircuitBreaker
    launcher: EmbeddedServer | None = None

    async def ready(self) -> float:
        """Wait until the upstream can take the request; the seconds spent launching it (0 if it was up)."""
        if self.launcher is None:
            return 0.0
        started = time.monotonic()
        await self.launcher.ensure_running()
        return time.monotonic() - started


class Router:
    """Serves a call from the first target that works."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        upstreams: Mapping[str, Upstream],
        limiter: Limiter | None = None,
    ) -> None:
        self.models = models
        self.upstreams = upstreams
        self.limiter = limiter

    def targets(self, alias: str) -> tuple[Target, ...]:
        model = self.models.get(alias)
        if model is None:
            shown = alias if len(alias) <= 100 else alias[:100] + "…"
            raise ModelNotFound(f"The model '{shown}' does not exist.", param="model")
        return model.targets

    async def __call__(self, call: Call) -> Reply:
        req = call.request
        if req.stream:
            return await self._first_success(
                req.model, call.trace, lambda up, target: self._streams(up, target, call)
            )

        async def chat(up: Upstream, target: Target) -> Reply:
            with Deadline(up.cfg.total_timeout):
                if req.n == 1 or up.cfg.n_choices == "native":
                    completion = check_choices(await up.adapter.chat(req, target), req.n, up.cfg.name)
                else:
                    one = dataclasses.replace(req, n=1)
                    completion = merge_completions(
                        await all_of([up.adapter.chat(one, target) for _ in range(req.n)])
                    )
            _note_meta(call.notes, completion.meta)
            return completion

        return await self._first_success(req.model, call.trace, chat)

    async def _streams(self, up: Upstream, target: Target, call: Call) -> Stream:
        """The reply stream: one upstream stream, or n of them merged when the upstream gives one choice."""
        req = call.request
        if req.n == 1:
            return await self._open_stream(up, target, call.trace, req)
        if up.cfg.n_choices == "native":
            return checked_stream(await self._open_stream(up, target, call.trace, req), req.n, up.cfg.name)
        one = dataclasses.replace(req, n=1)
        tasks = [asyncio.ensure_future(self._first_output(up, target, one)) for _ in range(req.n)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One failed (or the client left): stop the others, and close the ones that had started.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is None:
                    await task.result()[1].aclose()
            raise
        return merge_streams([self._rest(up, call.trace, *task.result()) for task in tasks])

    async def embed(self, req: EmbeddingRequest, trace: Trace) -> JSON:
        async def embed(up: Upstream, target: Target) -> JSON:
            with Deadline(up.cfg.total_timeout):
                return await up.adapter.embed(req, target)

        return await self._first_success(req.model, trace, embed)

    async def _first_success(
        self, alias: str, trace: Trace, attempt: Callable[[Upstream, Target], Awaitable[T]]
    ) -> T:
        notes = trace.notes
        failure: UpstreamError | None = None
        for target in self.targets(alias):
            up = self.upstreams[target.upstream]
            if not up.breaker.allow():
                continue
            started = time.monotonic()
            slot: Grant | None = None
            try:
                # Each await below is skipped when it has nothing to do: most upstreams have no limit of
                # their own and are not launched by Fluido, and an await costs a coroutine.
                if self.limiter is not None and up.cfg.limits.any:
                    slot = await self._admit(up)
                if up.launcher is not None:
                    trace.launch_seconds += await up.ready()
                result = await attempt(up, target)
            except TimeoutError:
                failure = UpstreamTimeout(f"Upstream '{up.cfg.name}' timed out.")
            except UpstreamError as exc:
                if not exc.retryable:
                    up.breaker.success()  # it answered: the upstream is healthy, the request is not
                    raise
                failure = exc
            else:
                up.breaker.success()
                # For a stream this is the time to its first output; the stream updates it when it ends.
                trace.upstream_ms = (time.monotonic() - started) * 1000
                notes["upstream"] = up.cfg.name
                notes["upstream_model"] = target.model
                if slot is not None and inspect.isasyncgen(result):
                    result, slot = self._hold(result, slot), None  # type: ignore[arg-type, assignment]
                return result
            finally:
                if slot is not None:
                    await self._release(slot)
            # Only the upstream's own faults open its circuit: an upstream that refused this request (its
            # validation, "no such model", "too busy") is alive, and the next request may well succeed.
            if failure.fault:
                up.breaker.failure()
            trace.upstream_failures.append((up.cfg.name, failure.code or failure.type))
            notes["fallbacks"] = str(len(trace.upstream_failures))
            log.warning("upstream_failed", upstream=up.cfg.name, model=target.model, error=failure.message)
        if failure is not None:
            try:
                raise failure
            finally:  # this frame keeps no reference to the error, whose traceback holds the frame
                failure = None
        raise UpstreamUnavailable(f"Every upstream for '{alias}' is unavailable; retry shortly.")

    async def _admit(self, up: Upstream) -> Grant | None:
        """Take a slot under the upstream's own limit (all clients together), if it has one."""
        limits = up.cfg.limits
        if self.limiter is None or not limits.any:
            return None
        scope = f"upstream:{up.cfg.name}"
        try:
            slot = await self.limiter.acquire([Bucket(scope, scope, limits)], 0)
        except LimiterUnavailable:
            return None  # the limit protects the upstream; without its store, let the upstream decide
        if not slot.allowed:
            raise UpstreamBusy(
                f"Upstream '{up.cfg.name}' is at its configured limit.", retry_after=slot.retry_after
            )
        return slot

    async def _release(self, slot: Grant | None) -> None:
        if slot is not None and self.limiter is not None:
            with contextlib.suppress(LimiterUnavailable):
                await self.limiter.settle(slot, 0, 0)

    async def _hold(self, stream: Stream, slot: Grant) -> Stream:
        """Pass a stream through, keeping its upstream slot until the stream ends."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()
            await self._release(slot)

    async def _open_stream(self, up: Upstream, target: Target, trace: Trace, req: ChatRequest) -> Stream:
        """Start the upstream stream and wait for its first output, so a failure until then can fall back.

        Output is text, reasoning, a tool call or a finish: a reply that finished without a word commits
        like any other (an empty completion is an answer). Adapters raise on a stream that ends unfinished,
        so running out of chunks here cannot happen with them; it is still a broken stream if it does.
        """
        return self._rest(up, trace, *await self._first_output(up, target, req))

    async def _first_output(
        self, up: Upstream, target: Target, req: ChatRequest
    ) -> tuple[list[Chunk], Stream, float]:
        """(the chunks up to the first output, the open upstream stream, when it started)."""
        cfg = up.cfg
        started = asyncio.get_running_loop().time()
        chunks = up.adapter.stream(req, target)
        head: list[Chunk] = []
        try:
            async with asyncio.timeout(min(cfg.first_token_timeout, cfg.total_timeout)):
                while not head or not (head[-1].carries_output or head[-1].usage):
                    head.append(await anext(chunks))
        except StopAsyncIteration:
            await chunks.aclose()
            message = f"Upstream '{cfg.name}' ended the stream before the reply was complete."
            raise UpstreamError(message) from None
        except BaseException:
            await chunks.aclose()
            raise
        return head, chunks, started

    async def _rest(
        self, up: Upstream, trace: Trace, head: list[Chunk], chunks: Stream, started: float
    ) -> Stream:
        cfg = up.cfg
        async with aclosing(chunks):
            for chunk in head:
                yield chunk
            loop = asyncio.get_running_loop()
            watch = IdleWatch(cfg.idle_timeout, started + cfg.total_timeout)
            # ``async for``, and the watch's wait marked by hand: this loop runs for every chunk of a stream.
            # Only the upstream's waits are timed; a consumer slow to come back for the next chunk is not.
            try:
                try:
                    watch.since = loop.time()
                    async for chunk in chunks:
                        watch.since = None
                        if chunk.meta:
                            _note_meta(trace.notes, chunk.meta)
                        yield chunk
                        watch.since = loop.time()
                except asyncio.CancelledError:
                    if not watch.absorb():
                        raise
                    error: UpstreamError = UpstreamTimeout(f"Upstream '{cfg.name}' stalled mid-stream.")
                except UpstreamError as exc:
                    error = exc
                else:
                    trace.upstream_ms = (loop.time() - started) * 1000
                    return
            finally:
                watch.close()
            if error.fault:
                up.breaker.failure()
            trace.upstream_failures.append((cfg.name, error.code or error.type))
            raise error


def _note_meta(notes: dict[str, str], meta: Mapping[str, JSON]) -> None:
    for key, value in meta.items():
        notes[f"upstream_{key}"] = f"{value:.1f}" if isinstance(value, float) else str(value)
