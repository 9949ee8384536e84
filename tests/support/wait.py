"""Waiting on a condition with a deadline: tests never sleep a fixed time to let something happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.01


def wait_until(condition: Callable[[], T], what: str, within: float = 10.0) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(INTERVAL_S)
