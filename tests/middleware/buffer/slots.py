"""A discrete-event slot server on a fake clock, driving a Gate the way the middleware does."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from middleware.buffer.queue import Entry, Gate


@dataclass
class SlotServer:
    """N slots; a request waits FIFO for a slot, then costs prefill (base + per_token * prompt), then
    ``itl`` per output token. The same timings as the fixed-capacity fake's defaults."""

    slots: int
    base: float = 0.02
    per_token: float = 0.0002
    itl: float = 0.005
    now: float = 0.0
    ends: list[float] = field(default_factory=list)  # end times of the requests sent and not finished
    # (time, n, "first" or "end", entry, ttft or output tokens, prompt tokens): pending events, kept
    # across runs
    events: list[tuple[float, int, str, Entry, float, int]] = field(default_factory=list)
    sent: int = 0
    most_in_flight: int = 0
    jitter: float = 0.0  # mean of an exponential delay added to each TTFT as seen (the proxy's CPU)

    def submit(self, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """Send one request now; returns (ttft, end time)."""
        self.most_in_flight = max(self.most_in_flight, len(self.ends) + 1)
        ends = sorted(self.ends)
        start = self.now if len(ends) < self.slots else ends[len(ends) - self.slots]
        ttft = start - self.now + self.base + self.per_token * prompt_tokens
        end = self.now + ttft + self.itl * output_tokens
        self.ends.append(end)
        return ttft, end


def run_saturated(
    gate: Gate, server: SlotServer, completions: int, seed: int = 1, most: int = 10**6, stream: bool = True
) -> list[int]:
    """Keep requests waiting at the gate (at most ``most`` sent at once); return L after each completion.
    Streamed requests give the controller their TTFT, the others their whole time."""
    rng = random.Random(seed)
    events = server.events
    limits: list[int] = []
    while len(limits) < completions:
        while gate.in_flight < min(gate.limit, most):
            entry = gate.arrive("short", 1e9, server.now)
            assert isinstance(entry, Entry)
            short = rng.random() < 0.7  # 70% short, 30% long, as in the benchmark
            prompt = rng.randint(50, 200) if short else rng.randint(1000, 2000)
            output = rng.randint(20, 60) if short else rng.randint(300, 600)
            ttft, end = server.submit(prompt, output)
            if server.jitter:
                ttft += rng.expovariate(1 / server.jitter)
            server.sent += 1
            heapq.heappush(events, (server.now + ttft, server.sent, "first", entry, ttft, prompt))
            heapq.heappush(events, (end, server.sent, "end", entry, output, prompt))
        when, _, kind, entry, value, prompt = heapq.heappop(events)
        server.now = when
        if kind == "first":
            if stream:
                gate.controller.sample(entry.epoch, value, prompt)
            continue
        server.ends.remove(when)
        if not stream:
            gate.controller.sample_reply(entry.epoch, when - entry.started_at, prompt, int(value))
        gate.finish(entry, when)
        limits.append(gate.limit)
    return limits
