"""The adaptive buffer's chain link: Fluido holds the queue, the upstream gets at most L requests at once.

Where it sits: after the cache and RAG (a hit never queues), right before the router. When RAG is on, its
shedding decision alone (``early``) also runs just after the cache, so a request refused under overload
is refused before the retrieval is spent on it.

Which upstream's slot a request holds: the router serves an alias from its first target whose circuit lets
a request through (closed, or half-open with no probe running), so the buffer queues the request at that
upstream's gate. If that attempt fails before the first
byte and the router falls back to a later target, the request has already waited its turn once; waiting
again at the next gate would double its wait, so instead the slot moves: the first gate's slot is given
back and the serving upstream's gate counts the request past its queue (``take``), so the serving
upstream's in-flight count stays true while the stream runs. Fallback is the failure path; its brief
over-commit of the second upstream is the price of not making a client wait twice. When every target's
circuit is open, the request is answered 503 at once, with Retry-After.

What it learns from each request: the upstream's TTFT (the router's time to first output) for streams,
with the prompt's estimated tokens; for replies that are not streamed, their whole time with the prompt's
and the completion's tokens (the controller judges the two against separate cost models); the upstream's
overload answers (503, 429, timeouts) from the trace's failed attempts.

The slot is given back when a completion returns, when a stream ends, breaks, or its client leaves (the
stream's tap, ``proxy.tap``), and when anything fails on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from middleware.buffer.admission import Admission, overloaded
from middleware.buffer.coalesce import GapMeter, coalesce
from middleware.buffer.config import BufferConfig
from middleware.buffer.queue import Entry, Shed
from proxy.tap import tap
from proxy.tokens import completion_tokens, estimate_prompt_tokens
from proxy.types import Call, Chunk, Completion, Handler, Reply, Stream, Target
from proxy.upstream.breaker import CircuitBreaker

# Failed attempts that mean "too much at once": an upstream 503 (busy), 429, or a timeout.
OVERLOAD_CODES = frozenset({"upstream_unavailable", "rate_limit_exceeded", "upstream_timeout"})


class Buffer:
    """Admission control per upstream, in front of the router."""

    def __init__(
        self,
        cfg: BufferConfig,
        targets: Callable[[str], tuple[Target, ...] | None],
        breakers: Mapping[str, CircuitBreaker],
        cooldowns: Mapping[str, float],
        admissions: Mapping[str, Admission],
        observe_wait: Callable[[str, float], None] = lambda upstream, seconds: None,
        observe_shed: Callable[[str, str], None] = lambda upstream, reason: None,
        observe_event: Callable[[int, float], None] = lambda deltas, held: None,
    ) -> None:
        self.cfg = cfg
        self.targets = targets
        self.breakers = breakers
        self.cooldowns = cooldowns
        self.admissions = admissions
        self.meters = {name: GapMeter() for name in admissions}
        self.observe_wait = observe_wait
        self.observe_shed = observe_shed
        self.observe_event = observe_event

    def pick(self, alias: str) -> str | None:
        """The upstream the router will try first: the alias's first target whose circuit is not open."""
        targets = self.targets(alias)
        if not targets:
            return None
        for target in targets:
            if self.breakers[target.upstream].available():
                return target.upstream
        raise overloaded(Shed("upstream_unavailable", self.cooldowns[targets[0].upstream]))

    def _pick(self, call: Call) -> str | None:
        try:
            return self.pick(call.request.model)
        except Exception:
            self.observe_shed("none", "upstream_unavailable")
            call.notes["shed"] = "upstream_unavailable"
            raise

    async def early(self, call: Call, next: Handler) -> Reply:
        """The shedding decision alone, taken before costly links that sit between the cache and the
        buffer (retrieval for RAG): a request the buffer would refuse now is refused before that work is
        spent on it. One that passes is judged again, and queued, by the buffer itself."""
        name = self._pick(call)
        if name is not None:
            cls = call.notes.get("query_class", "")
            now = asyncio.get_running_loop().time()
            if (shed := self.admissions[name].gate.check(cls, self.cfg.budget(cls), now)) is not None:
                call.notes["shed"] = shed.reason
                self.observe_shed(name, shed.reason)
                raise overloaded(shed)
        return await next(call)

    async def __call__(self, call: Call, next: Handler) -> Reply:
        name = self._pick(call)
        if name is None:
            return await next(call)  # an unknown alias: the router answers 404
        admission = self.admissions[name]
        trace = call.trace
        notes = trace.notes
        cls = notes.get("query_class", "")
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        try:
            # A free slot with nobody waiting is taken here, without a future or a timer.
            entry = admission.arrive(cls, self.cfg.budget(cls), arrived)
            if admission.waits(entry):
                await admission.wait(entry)
        except Exception as exc:
            reason = getattr(exc, "code", None) or "error"
            notes["shed"] = reason
            self.observe_shed(name, reason)
            raise
        waited = loop.time() - arrived
        self.observe_wait(name, waited)
        if entry.started_at > arrived:  # it waited in the queue (not merely passed through it)
            notes["queue_ms"] = str(round(waited * 1000))
        try:
            reply = await next(call)
        except BaseException:
            entry.launch = trace.launch_seconds
            if trace.upstream_failures:
                self._learn_failures(call, name, entry)
            admission.leave(entry)
            raise
        entry.launch = trace.launch_seconds
        if trace.upstream_failures:
            self._learn_failures(call, name, entry)
        whole = reply if isinstance(reply, Completion) else None
        served = notes.get("upstream", name)
        if served != name and served in self.admissions:
            admission.leave(entry)  # the router fell back: the slot moves to the upstream serving it
            admission = self.admissions[served]
            entry = admission.take(cls)  # taken now, after any launch: its holding time is service alone
        elif trace.upstream_ms is not None:
            seconds, tokens = trace.upstream_ms / 1000, estimate_prompt_tokens(call.request)
            controller = admission.gate.controller
            if whole is not None:
                controller.sample_reply(entry.epoch, seconds, tokens, completion_tokens(whole))
            else:
                controller.sample(entry.epoch, seconds, tokens)
            # A whole reply gives its slot back just below, which starts whoever may start then: a wake for
            # a moved L first matters only to waiters (with none, both would do the same, twice).
            if whole is None or admission.gate.depth:
                admission.changed()
        if isinstance(reply, Completion):
            admission.leave(entry)
            return reply
        return self._hold(reply, admission, entry, served)

    def _learn_failures(self, call: Call, name: str, entry: Entry) -> None:
        controller = self.admissions[name].gate.controller
        for upstream, code in call.trace.upstream_failures:
            if upstream == name and code in OVERLOAD_CODES:
                controller.overload(entry.epoch)
                self.admissions[name].changed()
                return

    def _hold(self, stream: Stream, admission: Admission, entry: Entry, served: str) -> Stream:
        """Pass the stream on, coalesced when that pays; give the slot back however it ends."""
        meter = self.meters.get(served)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deltas = 0

        def on_event(n: int, held: float) -> None:
            nonlocal deltas
            deltas += n
            self.observe_event(n, held)

        source = stream
        if self.cfg.coalesce and meter is not None and meter.fast():
            source = coalesce(stream, on_event)

        def count(chunk: Chunk) -> None:
            nonlocal deltas
            deltas += 1

        async def release(finished: bool) -> None:
            # The slot is given back even if closing the stream fails (the coalescer closes the stream
            # itself; closing a closed stream again does nothing).
            try:
                if source is not stream:
                    await stream.aclose()
            finally:
                admission.leave(entry)
                if meter is not None:
                    meter.record(deltas, loop.time() - started)

        return tap(source, count if source is stream else None, release)
