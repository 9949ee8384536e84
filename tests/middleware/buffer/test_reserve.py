"""Reserved shares of L on a fake clock: each class gets its share at overload, an unused share is lent so
the slots stay busy, small L reserves nothing, and the defaults are short 0.25 and long 0.25."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from middleware.buffer.config import BufferConfig, parse_buffer
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import EXPIRED, QUEUED, STARTED, Entry, Gate, Shed
from middleware.buffer.reserve import Reserve
from proxy.config_reader import Reader
from tests.middleware.buffer.clock import poisson

HOLD = {"short": 0.25, "code": 0.5, "long": 1.0}  # the benchmark fake's holding times, near enough
BUDGET = {"short": 0.6, "code": 1.2, "long": 1.8}  # "code" has no reserve
DEFAULT = dict(BufferConfig().reserve)


def gate(limit: int, reserve: dict[str, float]) -> Gate:
    return Gate(Controller(ControllerSettings(initial=limit, adaptive=False)), 64, reserve, jitter=0.0)


def entry(result: Entry | Shed) -> Entry:
    assert isinstance(result, Entry), result
    return result


@dataclass
class Run:
    busy: Counter[str]  # slot-seconds served per class
    slot_use: float  # share of the slot time busy while requests arrived
    idle_while_waiting: int  # events after which a slot was free and a request waited
    reserve_idle: int  # events after which a slot was free and a class below its reservation waited


def run(g: Gate, seconds: float, rate: float, mix: float, seed: int = 1, code: float = 0.0) -> Run:
    """Poisson arrivals, ``mix`` of them short and ``code`` of them code, the rest long, on the gate's
    slots; holding times as HOLD."""
    idle, reserve_idle = 0, 0

    def draw(rng: random.Random) -> str:
        x = rng.random()
        return "short" if x < mix else "code" if x < mix + code else "long"

    def count(now: float) -> None:
        nonlocal idle, reserve_idle
        idle += g.depth > 0 and g.in_flight < g.limit
        reserve_idle += g.in_flight < g.limit and any(
            g.waiting[c] > 0 and g.running[c] < g.reserve.slots(c, g.limit) for c in g.reserve.shares
        )

    busy = Counter[str]()
    for e in poisson(g, seconds, rate, draw, HOLD, BUDGET, seed, count):
        if e.state != EXPIRED:
            busy[e.cls] += max(0.0, min(e.started_at + HOLD[e.cls], seconds) - e.started_at)
    return Run(busy, sum(busy.values()) / (g.limit * seconds), idle, reserve_idle)


def capacity(limit: int, mix: float) -> float:
    return limit / (mix * HOLD["short"] + (1 - mix) * HOLD["long"])


def reserve_from(table: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    r = Reader({"reserve": table}, "buffer", [])
    return dict(parse_buffer(r, {}).reserve), r.problems


def test_the_defaults_reserve_a_quarter_of_l_for_short_and_for_long_requests() -> None:
    assert DEFAULT == reserve_from({})[0] == {"short": 0.25, "long": 0.25}
    assert reserve_from({"long": 0}) == ({"short": 0.25, "long": 0.0}, [])  # 0 takes one away
    shares, problems = reserve_from({"code": 0.5})  # with the defaults kept, more than all of L
    assert shares["short"] == 0.25 and "add up to less than 1" in problems[0]


def test_at_four_times_the_capacity_the_long_class_gets_at_least_its_share() -> None:
    reserved = run(gate(4, DEFAULT), 60.0, 4 * capacity(4, 0.7), mix=0.7)
    assert reserved.busy["long"] / (4 * 60.0) >= 0.9 * 0.25  # its quarter, less the run's ends
    assert reserved.slot_use >= 0.95
    # The control: without reserves short questions pass the long requests until hardly any is served.
    bare = run(gate(4, {}), 60.0, 4 * capacity(4, 0.7), mix=0.7)
    assert bare.busy["long"] / (4 * 60.0) < 0.1


def test_a_share_its_class_does_not_use_is_lent_and_the_slots_stay_busy() -> None:
    # Only long requests, twice what the slots serve: the short class's slot is lent to them.
    g = gate(4, DEFAULT)
    longs = run(g, 30.0, 2 * capacity(4, 0.0), mix=0.0)
    assert longs.slot_use >= 0.95 and longs.idle_while_waiting == 0
    # Only short questions: the long class's slot serves them.
    shorts = run(gate(4, DEFAULT), 30.0, 2 * capacity(4, 1.0), mix=1.0)
    assert shorts.slot_use >= 0.95 and shorts.idle_while_waiting == 0


def test_a_busy_class_keeps_its_share_from_a_class_that_would_overrun_its_budget() -> None:
    g = gate(4, DEFAULT)
    g.forecast.by_class, g.forecast.mean = dict(HOLD), 0.5
    g.budgets.update(BUDGET)
    for _ in range(6):
        g.forecast.arrived("short", 0.0)  # short questions keep arriving (2 a second)
    longs = [entry(g.arrive("long", BUDGET["long"], 0.0)) for _ in range(4)]
    # A long request holds a slot past a short question's budget: the short slot is not lent to it.
    assert [e.state for e in longs] == [STARTED, STARTED, STARTED, QUEUED]
    assert entry(g.arrive("short", BUDGET["short"], 0.0)).state == STARTED
    # A short question gives a slot back well within a long request's budget: the long slot is lent.
    h = gate(4, DEFAULT)
    h.forecast.by_class, h.forecast.mean = dict(HOLD), 0.5
    h.budgets.update(BUDGET)
    for _ in range(6):
        h.forecast.arrived("long", 0.0)
    assert all(entry(h.arrive("short", BUDGET["short"], 0.0)).state == STARTED for _ in range(4))


def test_a_lent_share_returns_to_its_class_at_the_next_free_slot() -> None:
    g = gate(4, DEFAULT)
    g.forecast.by_class, g.forecast.mean = dict(HOLD), 0.5
    shorts = [entry(g.arrive("short", 10.0, 0.0)) for _ in range(4)]  # the long slot is lent
    assert all(e.state == STARTED for e in shorts)
    more = entry(g.arrive("short", 10.0, 0.0))  # deadline 10.0: before the long one's
    long_ = entry(g.arrive("long", 30.0, 0.0))
    assert (more.state, long_.state) == (QUEUED, QUEUED)
    g.finish(shorts[0], 0.25)
    assert g.pop_ready(0.25) is long_  # its reserved slot, though the short one's deadline is earlier
    g.finish(shorts[1], 0.25)
    assert g.pop_ready(0.25) is more


def test_small_l_reserves_nothing_and_one_slot_always_stays_anybodys() -> None:
    r = Reserve({"short": 0.25, "long": 0.25, "code": 0.25}, Counter(), Counter(), gate(1, {}).forecast, {})
    assert [(r.slots("short", n), r.slots("long", n)) for n in (1, 2)] == [(0, 0), (0, 0)]
    assert sum(r.slots(c, 3) for c in ("short", "long", "code")) == 2  # at least one each, but not all
    assert (r.slots("short", 4), r.slots("long", 4), r.slots("short", 8)) == (1, 1, 2)


def test_with_one_slot_the_reserves_neither_deadlock_nor_idle_it() -> None:
    """The embedded server's single slot, at twice what it serves, both classes: it never idles while a
    request waits, and both classes are served."""
    g = gate(1, DEFAULT)
    one = run(g, 60.0, 2 * capacity(1, 0.7), mix=0.7)
    assert one.idle_while_waiting == 0 and one.slot_use >= 0.95
    assert one.busy["short"] > 0 and one.busy["long"] > 0


def test_a_free_slot_goes_to_a_class_below_its_reservation_though_another_class_holds_it_too() -> None:
    g = gate(4, DEFAULT)
    g.forecast.by_class, g.forecast.mean = dict(HOLD), 0.5
    codes = [entry(g.arrive("code", 30.0, 0.0)) for _ in range(4)]  # no reserve: it fills every slot
    short, long_ = entry(g.arrive("short", 10.0, 0.0)), entry(g.arrive("long", 30.0, 0.0))
    assert (short.state, long_.state) == (QUEUED, QUEUED)
    g.finish(codes[0], 0.5)
    # Each holds its reserved slot against the other; one takes it, the other the next slot to free.
    assert g.pop_ready(0.5) is short and g.in_flight == 4
    # The control: a class at its reservation does not take the slot the other one waits for, though its
    # deadline is earlier.
    more = entry(g.arrive("short", 10.0, 0.5))
    g.finish(codes[1], 0.6)
    assert g.pop_ready(0.6) is long_ and more.state == QUEUED


def test_with_three_classes_at_overload_no_slot_idles_while_a_class_below_its_reservation_waits() -> None:
    """Code requests (no reserve) fill the slots the short and long classes do not; a slot still idles at
    times while a long request waits, kept for the short questions arriving (the short reservation is not
    lent to a class that would hold it past a short question's budget), but never while a class below its
    reservation waits."""
    three = run(gate(4, DEFAULT), 60.0, 4 * capacity(4, 0.25), mix=0.25, code=0.5)
    assert three.reserve_idle == 0 and three.slot_use >= 0.95
    assert all(three.busy[c] > 0 for c in HOLD)
