"""A fixed-capacity fake with fast, known timings for the load tester's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.capacity import FakeCapacity

PREFILL_S = 0.03
PER_WORD_S = 0.001
ITL_S = 0.01


def fast_fake(slots: int = 4) -> FakeCapacity:
    return FakeCapacity(slots, prefill_base_s=PREFILL_S, prefill_per_token_s=PER_WORD_S, itl_s=ITL_S)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCapacity]:
    async with fast_fake() as server:
        yield server


@pytest.fixture
def threaded_fake() -> Iterator[FakeCapacity]:
    """For tests of the command, which runs its own event loop."""
    server = fast_fake()
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop_thread()
