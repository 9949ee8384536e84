"""A request that finds a slot free and nobody waiting is admitted without a future or a timer, and a
release with nobody waiting skips the queue's wake-up: the gauges show the same as on the waiting path,
and a waiter is still woken when a slot frees (the control)."""

from __future__ import annotations

import asyncio

from middleware.buffer.admission import Admission
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import QUEUED, STARTED, Gate
from proxy.observe.metrics import Metrics

RESERVE = {"short": 0.25, "long": 0.25}


def gauges(metrics: Metrics) -> dict[str, float]:
    """The buffer's gauges as a scrape shows them."""
    text = metrics.render()[0].decode()
    names = ("fluido_buffer_limit", "fluido_buffer_in_flight", "fluido_buffer_queue_depth")
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(names)
    }


def admission(limit: int, metrics: Metrics) -> Admission:
    gate = Gate(Controller(ControllerSettings(initial=limit, adaptive=False)), 64, RESERVE)
    found = metrics.buffer_gauges("up")

    def report(a: Admission) -> None:
        found.set(a.gate.limit, a.gate.in_flight, a.gate.depth)

    return Admission("up", gate, on_change=report)


async def test_a_free_slot_is_taken_at_arrival_with_no_waiter_and_no_timer() -> None:
    metrics = Metrics(["chat"], ["up"])
    a = admission(1, metrics)
    now = asyncio.get_running_loop().time()
    first = a.arrive("short", 5.0, now)
    assert first.state == STARTED and not a.waits(first)
    assert first.waiter is None and a._timer is None and a._recheck is None
    assert gauges(metrics) == {
        "fluido_buffer_limit": 1.0, "fluido_buffer_in_flight": 1.0, "fluido_buffer_queue_depth": 0.0,
    }  # fmt: skip
    # The control: the slot is taken, so the next one queues and must wait, with its expiry timer armed.
    second = a.arrive("short", 5.0, now)
    assert second.state == QUEUED and a.waits(second)
    waiting = asyncio.create_task(a.wait(second))
    await asyncio.sleep(0)
    assert a._timer is not None and gauges(metrics)["fluido_buffer_queue_depth"] == 1.0
    a.leave(first)  # a waiter: the release wakes it
    await asyncio.wait_for(waiting, 5)
    assert second.state == STARTED
    assert gauges(metrics) == {
        "fluido_buffer_limit": 1.0, "fluido_buffer_in_flight": 1.0, "fluido_buffer_queue_depth": 0.0,
    }  # fmt: skip
    a.leave(second)  # nobody waits: only the gauges move
    assert gauges(metrics)["fluido_buffer_in_flight"] == 0.0
    await a.close()
