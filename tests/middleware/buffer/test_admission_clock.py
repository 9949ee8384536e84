"""The admission gate on a fake clock: a waiter kept from a free slot only while another class's arrivals
are likely starts once they have died down, with no other event to wake the queue."""

from __future__ import annotations

import asyncio

import pytest

from middleware.buffer.admission import RECHECK, Admission
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import STARTED, Entry, Gate
from proxy.errors import Overloaded
from tests.middleware.buffer.clock import run_virtual

BUDGET = {"short": 5.0, "long": 30.0}
HOLD = {"short": 2.0, "long": 20.0}


def warmed_gate(limit: int = 4) -> tuple[Gate, float]:
    """Short and long requests served in turn, one at a time: the holding times are measured, and the short
    class's recent arrivals make one likely while a long request would overrun its budget."""
    g = Gate(Controller(ControllerSettings(initial=limit, adaptive=False)), 64, {"short": 0.25, "long": 0.25})
    now = 0.0
    for cls in ("short", "long") * 3 + ("short",):
        e = g.arrive(cls, BUDGET[cls], now)
        assert isinstance(e, Entry)
        now += HOLD[cls]
        g.finish(e, now)
    return g, now - HOLD["short"]


async def fill_and_wait(admission: Admission) -> tuple[list[Entry], asyncio.Task[Entry], float]:
    longs = [await admission.enter("long", BUDGET["long"]) for _ in range(3)]  # the long slot and two free
    waiter = asyncio.create_task(admission.enter("long", BUDGET["long"]))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    # The fourth slot is the short class's, kept for the short questions likely to arrive.
    assert admission.gate.in_flight == 3 and admission.gate.depth == 1
    assert not admission.gate.may_start("long", loop.time())
    lent_in = admission.gate.reserve.lends_in(admission.gate.limit, loop.time())
    assert lent_in is not None and lent_in > 2 * RECHECK
    return longs, waiter, loop.time() + lent_in


def test_a_waiter_starts_once_the_reservation_kept_from_it_is_lent_without_any_other_event() -> None:
    g, start = warmed_gate()

    async def scenario() -> None:
        admission = Admission("fake", g)
        _, waiter, lent_at = await fill_and_wait(admission)
        entry = await waiter
        assert entry.state == STARTED and lent_at <= entry.started_at <= lent_at + RECHECK
        assert admission._recheck is None  # nobody waits: no timer left
        await admission.close()

    run_virtual(scenario(), start)


def test_a_waiter_kept_from_the_short_slot_waits_while_short_questions_keep_arriving() -> None:
    """The control: the short class's arrivals go on, so its slot stays kept and the long waiter expires."""
    g, start = warmed_gate()

    async def scenario() -> None:
        admission = Admission("fake", g)
        _, waiter, _ = await fill_and_wait(admission)
        loop = asyncio.get_running_loop()
        while not waiter.done():  # a short question every second, each refused... or served at once
            short = g.arrive("short", BUDGET["short"], loop.time())
            if isinstance(short, Entry) and short.state == STARTED:
                g.finish(short, loop.time())
            await asyncio.sleep(1.0)
        with pytest.raises(Overloaded):
            waiter.result()
        await admission.close()

    run_virtual(scenario(), start)
