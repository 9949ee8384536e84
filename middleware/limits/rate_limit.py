"""Requests per minute, tokens per minute and concurrent requests, per API key (or client IP), optionally per
model alias.

Tokens are reserved before the call (the prompt's estimate plus ``max_tokens``) and settled when the reply
ends, stream or not, error or disconnect included: unused tokens go back, tokens used beyond the reservation
are charged (a stream cut short, which gets no usage report, is charged its prompt and what it streamed),
and the concurrency slot is released. Every answer carries OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import structlog

from middleware.limits.config import KeyConfig, LimitsConfig
from middleware.limits.limiter import MemoryLimiter
from proxy.errors import RateLimited, StoreUnavailable
from proxy.limits import Bucket, Grant, Limiter, LimiterUnavailable
from proxy.tap import tap
from proxy.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens
from proxy.types import Call, Chunk, Completion, Handler, Reply, Stream

log = structlog.get_logger("fluido.rate_limit")
_NAMES = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "concurrent requests"}


def duration(seconds: float) -> str:
    """OpenAI's reset format: "1.5s", "6m0s"."""
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def _set_headers(headers: dict[str, str], grant: Grant) -> None:
    """OpenAI's x-ratelimit-* headers: the requests' then the tokens' limit, remaining and reset."""
    if (requests := grant.requests) is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = duration(requests.reset)
    if (tokens := grant.tokens) is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = duration(tokens.reset)


class RateLimit:
    """The chain link that enforces per-client limits."""

    def __init__(
        self,
        limiter: Limiter,
        cfg: LimitsConfig,
        keys: Mapping[str, KeyConfig],
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self.limiter = limiter
        self.cfg = cfg
        self.keys = keys
        self.on_unavailable = on_unavailable
        # The memory limiter never waits: its plain functions are called, not its coroutines (the class
        # itself only: a subclass may have made them wait).
        self._memory = limiter if type(limiter) is MemoryLimiter else None
        # A key's buckets, alone and on each model alias it limits, are the same for every request: made
        # once (their number is bounded by the configuration, never by what clients send).
        self._key_buckets = {name: self._for_key(name, None) for name in keys}
        self._model_buckets = {
            (name, model): self._for_key(name, model) for name, key in keys.items() for model in key.models
        }

    def _for_key(self, name: str, model: str | None) -> tuple[Bucket, ...]:
        key, scope = self.keys[name], f"key:{name}"
        buckets = [Bucket(scope, scope, key.limits)] if key.limits.any else []
        per_model = key.models.get(model) if model is not None else None
        if per_model is not None and per_model.any:
            buckets.append(Bucket(scope, f"{scope}:model:{model}", per_model))
        return tuple(buckets)

    def buckets(self, call: Call) -> Sequence[Bucket]:
        trace = call.trace
        if trace.key is None:
            scope = f"ip:{trace.client}"
            return [Bucket(scope, scope, self.cfg.client)] if self.cfg.client.any else []
        found = self._model_buckets.get((trace.key, call.request.model))
        return found if found is not None else self._key_buckets[trace.key]

    async def __call__(self, call: Call, next: Handler) -> Reply:
        buckets = self.buckets(call)
        if not buckets:
            return await next(call)
        request, trace, memory = call.request, call.trace, self._memory
        prompt = estimate_prompt_tokens(request)
        reserved = prompt + (request.max_tokens or self.cfg.default_max_tokens)
        if memory is not None:
            grant = memory.take(buckets, reserved)
        else:
            try:
                grant = await self.limiter.acquire(buckets, reserved)
            except LimiterUnavailable as exc:
                self.on_unavailable()
                log.warning("rate_limiter_unavailable", error=str(exc), fail=self.cfg.fail)
                if self.cfg.fail == "closed":
                    raise StoreUnavailable(
                        "Rate limits cannot be checked right now; retry shortly.",
                        code="rate_limiter_unavailable",
                    ) from None
                return await next(call)
        _set_headers(trace.headers, grant)
        if not grant.allowed:
            call.notes["rate_limited"] = grant.refused_by
            limit, wait = _NAMES.get(grant.refused_by, grant.refused_by), duration(grant.retry_after)
            raise RateLimited(
                f"Rate limit reached for {limit} ({trace.client}). Retry in {wait}.",
                retry_after=grant.retry_after,
            )
        try:
            reply = await next(call)
        except BaseException:
            await self._settle(grant, reserved, 0)  # nothing was generated: every token goes back
            raise
        if isinstance(reply, Completion):
            used = reply.usage.total_tokens if reply.usage else reserved
            if memory is not None:
                memory.give_back(grant, reserved, used)
            else:
                await self._settle(grant, reserved, used)
            return reply
        return self._settling(reply, grant, reserved, prompt)

    def _settling(self, stream: Stream, grant: Grant, reserved: int, prompt: int) -> Stream:
        # The usage report comes last: a stream cut short (an error, the client leaving) has none, and is
        # charged its prompt and what it generated (a token per streamed piece at least), not max_tokens.
        # Settled (and the concurrency slot released) however the stream ends, even if closing it fails.
        usage: int | None = None
        pieces = chars = 0

        def count(chunk: Chunk) -> None:
            nonlocal usage, pieces, chars
            if chunk.usage is not None:
                usage = chunk.usage.total_tokens
            if chunk.carries_output:
                pieces += 1
                chars += len(chunk.content or "") + len(chunk.reasoning or "")
                if chunk.tool_calls:
                    chars += sum(len(t.arguments) + len(t.name or "") for t in chunk.tool_calls)

        async def settle(finished: bool) -> None:
            generated = max(pieces, chars // CHARS_PER_TOKEN)
            await self._settle(grant, reserved, usage if usage is not None else prompt + generated)

        return tap(stream, count, settle)

    async def _settle(self, grant: Grant, reserved: int, used: int) -> None:
        if self._memory is not None:
            self._memory.give_back(grant, reserved, used)
            return
        try:
            await self.limiter.settle(grant, reserved, used)
        except LimiterUnavailable as exc:
            self.on_unavailable()
            log.warning("rate_limiter_unavailable", error=str(exc), during="settle")
