"""The shed-latency floor: a minimal server answering Fluido's 429 at once, timed by the shed probe over
real sockets, the same way as Fluido's shed answers are."""

from __future__ import annotations

import asyncio
import os

from bench.buffer.floor import floor_run


def test_the_floor_server_answers_every_probe_request_with_a_stamped_429() -> None:
    allowed = os.sched_getaffinity(0)
    requests = asyncio.run(floor_run(None, allowed, rate=40.0, seconds=1.0))
    assert len(requests) >= 10, "Poisson arrivals at 40/s for a second"
    assert {r["status"] for r in requests} == {429}
    assert {r["code"] for r in requests} == {"deadline_unreachable"}
    assert all(r["arrive"] is not None and 0 < r["arrive"] <= r["e2e"] for r in requests)
    assert all(r["write"] is not None and r["write"] >= 0 for r in requests)
    assert os.sched_getaffinity(0) == allowed, "the probe's core set is given back"
