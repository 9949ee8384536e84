"""A per-upstream circuit breaker: stop sending work to an upstream that keeps failing."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``cooldown`` seconds lets one probe through.

    closed -> (N failures) -> open -> (cooldown) -> half-open: one request probes;
    its success closes the circuit, its failure opens it for another cooldown. A probe that never reports
    (its client left) stops blocking after one more cooldown.
    """

    __slots__ = ("_clock", "_cooldown", "_failures", "_opened_at", "_probe_at", "_threshold")

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probe_at is not None or self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self._cooldown:
            return False
        if self._probe_at is not None and now - self._probe_at < self._cooldown:
            return False
        self._probe_at = now
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_at = None

    def failure(self) -> None:
        self._failures += 1
        self._probe_at = None
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()
