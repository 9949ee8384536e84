"""The concurrency limit L of one upstream, learned from time to first token.

The seed is what the upstream says about itself (llama.cpp's ``total_slots``, a configured ``parallel``
for Ollama, a small default for vLLM). From then on, a Gradient2-style rule adapted to 1-64 slots:

- Each streamed request gives one sample: its upstream TTFT divided by what a prompt of that length costs
  when it does not wait (``PromptCost``, a running fit ``a + b * prompt_tokens``). Whole-request latency
  would measure output length, not queueing. A reply that is not streamed gives its whole time divided by
  what a reply of its prompt and completion tokens costs (``ReplyCost``): a weaker signal, but without it
  a client that never streams would hold L at its seed.
- Samples are judged in windows of ``max(window, L)`` completions, counting only requests dispatched
  under the current L (an older request says nothing about the new L). The window's mean ratio (each
  capped at 10) against ``tolerance`` says whether requests now wait inside the upstream: past one more
  request than it has slots, every new request waits for a slot to free, so the ratios jump from ~1 to
  several times the prefill.
- Congested: L steps down (by more when far past the slots) and the level that congested is remembered as
  a ceiling. Calm and fully used (some moment of the window had L in flight): L steps up; to the ceiling
  only after a few calm windows, more of them each time the ceiling congests again (so L rests at the slot
  count instead of bouncing above it), but never so many that it cannot follow an upstream that gained
  slots. A probe of the ceiling fails on two samples and passes only on two whole windows in a row (one
  calm window one past the slots can be luck: slots that free together let most requests start at once).
- Queueing, not jitter: a window is congested when its mean ratio passes ``tolerance``, its mean excess
  TTFT is a fair share of the gap between two slots freeing (and at least 10 ms), and more than one sample
  waited that long.
- Steps are integers: 1 up to 8 slots, ``sqrt(L) // 2`` above (2 at 16, 4 at 64).
- Hard signals: an upstream 503 "busy", 429 or timeout cuts L at once (``x0.9``, at least 1), once per
  dispatch generation; while the upstream reports its own queue, L does not grow, and while it reports
  an empty one, a slow TTFT is not taken for queueing there.

Pure: no clock, no I/O. The caller feeds dispatches, samples and signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from middleware.buffer.cost import PromptCost, ReplyCost


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    initial: int = 4
    minimum: int = 1
    maximum: int = 64
    adaptive: bool = True
    tolerance: float = 1.5  # a window whose mean sample is this many times the cost model is congested
    window: int = 4  # the fewest completions judged together
    memory: int = 100  # samples the cost model remembers (its forgetting horizon)
    max_probe_wait: int = 2  # calm windows required before trying the ceiling again, at most


RATIO_CAP = 10.0  # one stalled sample must not decide a window alone
PROBE_SAMPLES = 2
PROBE_PASSES = 2
JITTER_SHARE = 0.25  # of the slot gap: less excess TTFT than this is not counted as queueing
# Nor is less than this, whatever the gap: an upstream that answers within a millisecond or two (a cache, a
# tiny model, a benchmark's fake) has a gap that small, and a busy proxy's event loop delays a first token
# by several ms with no queue anywhere. A model's slots free tens of ms apart or more (64 slots holding
# 1.3 s each: 20 ms), and an upstream that reports its own queue holds L's growth anyway.
MIN_QUEUEING = 0.010


def step(limit: int) -> int:
    return max(1, math.isqrt(limit) // 2)


class Controller:
    """L for one upstream."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.maximum = settings.maximum
        self.limit = min(max(settings.initial, settings.minimum), settings.maximum)
        self.cost = PromptCost(settings.memory)
        self.reply_cost = ReplyCost(settings.memory)
        self.epoch = 0  # bumped on every change of L: samples from an older epoch are not judged
        # The upstream's own word on its queue (vLLM waiting, llama.cpp deferred); None when it says nothing.
        # Waiting requests there hold growth; an empty queue there overrules a slow TTFT (the proxy's own
        # CPU may be what was slow).
        self.upstream_queue: int | None = None
        self.ceiling: int | None = None  # the lowest L seen congested since the last successful probe
        self._probe_wait = 1
        self._calm = 0  # calm, fully used windows in a row just below the ceiling
        self._passes = 0  # calm windows in a row at the ceiling
        self._ratios: list[float] = []
        self._excess: list[float] = []  # seconds over the cost model, for the same samples
        self._peak = 0  # the most in flight at once since the window began
        # Seconds between two slots freeing when all are busy (mean hold / L), set by the queue. Waiting
        # inside the upstream costs about that much; a smaller excess is jitter, not queueing.
        self.slot_gap: float | None = None

    def dispatched(self, in_flight: int) -> int:
        """A request was sent, ``in_flight`` now running; returns its epoch for ``sample``/``overload``."""
        self._peak = max(self._peak, in_flight)
        return self.epoch

    def sample(self, epoch: int, ttft: float, prompt_tokens: int) -> None:
        """One upstream TTFT (seconds from dispatch to first output) for a prompt of ``prompt_tokens``."""
        expected = self.cost.expected(prompt_tokens)
        ratio = ttft / expected if expected > 0 else 1.0
        self.cost.add(prompt_tokens, ttft, self._weight(ratio))
        self._record(epoch, ratio, ttft - expected, expected)

    def sample_reply(self, epoch: int, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        """One whole reply that was not streamed (seconds from dispatch to its end): its first token is not
        seen, so it is judged against ``ReplyCost``. It tells queueing apart less sharply than a TTFT (one
        past the slots makes a reply ``1 + 1/slots`` times slower, a first token several times), but a
        client that never streams must not leave L at its seed."""
        expected = self.reply_cost.expected(prompt_tokens, completion_tokens)
        ratio = seconds / expected if expected > 0 else 1.0
        self.reply_cost.add(prompt_tokens, completion_tokens, seconds, self._weight(ratio))
        self._record(epoch, ratio, seconds - expected, expected)

    def _weight(self, ratio: float) -> float:
        # The fits follow the lower envelope: slow samples (queued inside the upstream) do not move them,
        # unless L is already at its floor and the upstream has simply become slower; fast ones pull them
        # down.
        at_floor = self.limit <= self.settings.minimum
        return 2.0 if ratio < 0.67 else 0.0 if ratio > self.settings.tolerance and not at_floor else 1.0

    def _record(self, epoch: int, ratio: float, excess: float, expected: float) -> None:
        s = self.settings
        if not s.adaptive or epoch != self.epoch or expected <= 0:
            return
        self._ratios.append(ratio)
        self._excess.append(excess)
        # A probe of the ceiling fails on fewer samples (every request it sends may be one that waits), but
        # passes only on a whole window: one early request may have found a slot just freeing.
        probing = self.ceiling is not None and self.limit >= self.ceiling
        n = len(self._ratios)
        if n >= max(s.window, self.limit) or (probing and n >= PROBE_SAMPLES and self._congested()):
            self._judge()

    def overload(self, epoch: int) -> None:
        """The upstream answered busy (503), rate limited (429) or timed out."""
        if not self.settings.adaptive or epoch != self.epoch:
            return  # requests sent before the last change of L already told us
        self.ceiling = self.limit
        self._set(min(self.limit - 1, math.floor(self.limit * 0.9)))

    def _mean(self) -> float:
        # The mean of capped ratios: every request waits past N+1 in flight, but a long prompt's ratio
        # rises less than a short one's, so a median can sit just under the tolerance. (``fsum / n`` is what
        # ``statistics.fmean`` computes, without its generator counting the values.)
        return math.fsum([RATIO_CAP if r > RATIO_CAP else r for r in self._ratios]) / len(self._ratios)

    @property
    def hold(self) -> bool:
        return bool(self.upstream_queue)

    def _congested(self, mean: float | None = None) -> bool:
        if (self._mean() if mean is None else mean) <= self.settings.tolerance or self.upstream_queue == 0:
            return False
        # Short prompts have tiny TTFTs, so scheduling jitter alone can double them: count it as queueing
        # only when the mean excess is a fair share of the time a queued request would wait for a slot,
        # and more than one sample waited that long (a stall of the proxy's CPU delays one). Queueing one
        # past the slots delays every request, but each only until the next slot frees, and slots often
        # free together (requests sent together end together): many wait a moment, a few wait long, so
        # a median would miss it.
        gap = self.slot_gap
        if gap is None:
            return True
        share = max(JITTER_SHARE * gap, MIN_QUEUEING)
        waited = sum(1 for excess in self._excess if excess > share)
        return waited >= 2 and math.fsum(self._excess) / len(self._excess) > share

    def _judge(self) -> None:
        s = self.settings
        mean = self._mean()
        congested = self._congested(mean)
        used = self._peak >= self.limit
        self._ratios.clear()
        self._excess.clear()
        self._peak = 0
        if congested:
            self._passes = 0
            if self.ceiling is not None and self.limit >= self.ceiling:
                self._probe_wait = min(self._probe_wait * 2, s.max_probe_wait)
            self.ceiling = self.limit
            self._calm = 0
            # One step just past the slot count; up to half of the excess when far past it.
            cut = max(step(self.limit), math.floor(self.limit * (1 - s.tolerance / mean) / 2))
            self._set(self.limit - cut)
            return
        if self.ceiling is not None and self.limit >= self.ceiling:
            # One calm window at the ceiling may be luck (the slots happened to free together): the
            # ceiling is lifted only after PROBE_PASSES calm windows in a row, so a lucky one does not
            # let L climb two past the slots.
            self._passes += 1
            if self._passes < PROBE_PASSES:
                return
            self.ceiling, self._probe_wait, self._passes = None, 1, 0  # it held: it was a passing jam
        if self.hold or not used:
            return
        grow = step(self.limit)
        if self.ceiling is not None and self.limit + grow >= self.ceiling:
            self._calm += 1
            if self._calm < self._probe_wait:
                return
            self._calm = 0
        self._set(self.limit + grow)

    def _set(self, limit: int) -> None:
        s = self.settings
        limit = min(max(limit, s.minimum), self.maximum)
        if limit != self.limit:
            self.limit = limit
            self.epoch += 1
            self._passes = 0
        self._ratios.clear()
        self._excess.clear()
        self._peak = 0

    def reseed(self, slots: int) -> None:
        """The upstream reported its slot count (llama.cpp ``total_slots``): start there, never above it
        (requests past the slots only wait inside the server, where Fluido cannot reorder or shed them)."""
        if slots <= 0 or slots == self.maximum:
            return
        self.maximum = slots
        self.ceiling, self._probe_wait, self._calm = None, 1, 0
        self._set(slots)
