"""Waiting on a condition with a deadline: tests never sleep a fixed time to let something happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """The async twin of ``wait_until``: ``check`` may be a plain or an awaitable condition."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(INTERVAL_S)
