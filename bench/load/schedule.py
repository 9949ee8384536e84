"""Load shapes: arrival times of an open loop, the closed loop's worker count, and the sweep's rates.

Arrival times are drawn up front from a seeded generator, so every endpoint of a comparison gets the very
same schedule and the generator does no random work while requests are in flight.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYNCHRONOUS = "synchronous"
THROUGHPUT = "throughput"


@dataclass(frozen=True, slots=True)
class Load:
    """One load level: an open loop at ``value`` requests/s (kind "rate") or a closed loop of ``value``
    workers (kind "concurrency"; the sweep's "synchronous" and "throughput" steps are closed loops)."""

    kind: str  # "rate" | "concurrency"
    value: float
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.kind == "rate":
            return f"{self.value:g} req/s"
        return f"{self.value:g} concurrent"

    @property
    def open_loop(self) -> bool:
        return self.kind == "rate"


def arrivals(rate: float, seed: int, *, duration: float | None = None, count: int | None = None,
             burstiness: float = 1.0) -> list[float]:  # fmt: skip
    """Send times (seconds from the start) of a renewal process with mean ``rate`` per second.

    Gaps are gamma-distributed with shape ``burstiness`` and mean 1/rate, as vLLM's benchmark and
    GuideLLM draw them: 1 is a Poisson process (exponential gaps), below 1 burstier, above 1 more even;
    ``math.inf`` gives a constant rate. It stops at ``count`` arrivals or before ``duration`` seconds.
    """
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    if duration is None and count is None:
        raise ValueError("arrivals need a duration or a count")
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    while count is None or len(times) < count:
        if burstiness == float("inf"):
            gap = 1.0 / rate
        else:
            gap = rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        # The first request goes at once: a run should not open with an idle gap of random length.
        t = t + gap if times else 0.0
        if duration is not None and t >= duration:
            break
        times.append(t)
    return times


def sweep_rates(synchronous_rps: float, throughput_rps: float, steps: int) -> list[float]:
    """GuideLLM's sweep: after a synchronous run (one request at a time) and a throughput run (everything
    at once) measured their request rates, ``steps`` rates evenly spaced from just above the first up to
    the second (the synchronous rate itself is not run again)."""
    if steps < 1:
        raise ValueError("a sweep needs at least one rate")
    low, high = synchronous_rps, max(throughput_rps, synchronous_rps)
    span = (high - low) / steps
    return [round(low + span * (i + 1), 4) for i in range(steps)]


def parse_numbers(text: str) -> list[float]:
    """ "0.5,1,2" -> [0.5, 1.0, 2.0], every value positive."""
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"expected positive numbers separated by commas, got {text!r}")
    return values
