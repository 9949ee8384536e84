"""Who the queue serves next, on a fake clock: short questions pass long requests within their slack, first
come first served knows no classes, and no admitted long request is left waiting past its budget."""

from __future__ import annotations

from statistics import median

from middleware.buffer.config import BufferConfig
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import EXPIRED, QUEUED, STARTED, Entry, Gate, Shed
from tests.middleware.buffer.clock import poisson


def gate(limit: int = 1, fifo: bool = False) -> Gate:
    g = Gate(Controller(ControllerSettings(initial=limit, adaptive=False)), 100, jitter=0.0, fifo=fifo)
    g.forecast.by_class = {"short": 0.1, "long": 1.0}  # as if measured: a long request holds 10x longer
    g.forecast.mean = 0.4
    return g


def entry(result: Entry | Shed) -> Entry:
    assert isinstance(result, Entry), result
    return result


def test_a_short_question_passes_a_long_request_that_still_starts_in_time() -> None:
    g = gate()
    running = entry(g.arrive("long", 30.0, 0.0))
    long_ = entry(g.arrive("long", 3.0, 0.0))  # deadline 3.0: earlier than the short one's
    short = entry(g.arrive("short", 5.0, 0.5))  # deadline 5.5
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is short  # the long one then starts at 1.1, well before 3.0
    g.finish(short, 1.1)
    assert g.pop_ready(1.1) is long_


def test_a_short_question_does_not_pass_a_long_request_it_would_make_late() -> None:
    g = gate()
    running = entry(g.arrive("long", 30.0, 0.0))
    # Deadline 1.3, margin 0.26 (a fifth of its budget, less than the 0.4 s slot gap): it starts at 1.0,
    # in time with the margin, but after the short one it would start at 1.1, within the margin.
    long_ = entry(g.arrive("long", 1.3, 0.0))
    entry(g.arrive("short", 5.0, 0.5))
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is long_


def test_without_a_measured_holding_time_the_order_is_plain_edf() -> None:
    g = gate()
    g.forecast.by_class, g.forecast.mean = {}, None
    running = entry(g.arrive("long", 30.0, 0.0))
    long_ = entry(g.arrive("long", 3.0, 0.0))
    entry(g.arrive("short", 5.0, 0.5))
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is long_


def test_first_come_first_served_never_lets_a_short_question_pass() -> None:
    g = gate(fifo=True)
    running = entry(g.arrive("long", 30.0, 0.0))
    long_ = entry(g.arrive("long", 30.0, 0.0))
    entry(g.arrive("short", 30.0, 0.5))
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is long_


def test_first_come_first_served_gives_every_class_one_common_budget() -> None:
    budgets = {"short": 1.0, "long": 9.0}
    fifo = BufferConfig(budgets=budgets, default_budget=9.0, order="fifo")
    assert fifo.budget("short") == fifo.budget("long") == 9.0
    edf = BufferConfig(budgets=budgets, default_budget=9.0)  # the control: EDF keeps the class budgets
    assert (edf.budget("short"), edf.budget("long")) == (1.0, 9.0)


def run_overload(g: Gate, seconds: float, rate: float, seed: int) -> tuple[list[Entry], list[float]]:
    """Poisson arrivals (70% short, 30% long) on a 4-slot server with the forecast's holding times; returns
    the admitted entries and, per entry, its wait until it started (inf if it never did)."""
    hold = {"short": 0.1, "long": 1.0}
    budgets = {"short": 0.3, "long": 2.0}
    admitted = poisson(
        g, seconds, rate, lambda rng: "short" if rng.random() < 0.7 else "long", hold, budgets, seed
    )
    waits = [e.started_at - e.arrival if e.state != EXPIRED else float("inf") for e in admitted]
    return admitted, waits


def test_at_twice_the_capacity_admitted_long_requests_are_served_within_their_budget() -> None:
    # Over four minutes of arrivals: the forecast is a forecast (the short questions that will pass a
    # long request arrive at random), so one admitted long request in a few hundred may still expire.
    longs, shorts = list[float](), list[float]()
    for seed in range(1, 5):
        admitted, waits = run_overload(gate(limit=4), 60.0, rate=2 * 4 / (0.7 * 0.1 + 0.3 * 1.0), seed=seed)
        longs += [w for e, w in zip(admitted, waits, strict=True) if e.cls == "long"]
        shorts += [w for e, w in zip(admitted, waits, strict=True) if e.cls == "short"]
    assert longs and shorts
    # Served within the budget, or shed at arrival: fewer than 1% expired (or waited past it)
    assert sum(w > 2.0 for w in longs) < 0.01 * len(longs)
    # and the short questions passed them: their typical wait is a small part of the long requests'
    assert median(shorts) < 0.25 * median(longs)


def test_a_short_question_is_not_admitted_ahead_of_a_long_request_it_would_leave_within_its_margin() -> None:
    g = gate()
    entry(g.arrive("long", 30.0, 0.0))  # runs until 1.0
    # Deadline 1.3, margin 0.26 (a fifth of its budget): it starts at 1.0, outside the margin; after the
    # short question, which would pass it, at 1.1: in time, but within the margin, as ``_quicker`` would
    # not let a short question pass it at a slot either.
    entry(g.arrive("long", 1.3, 0.0))
    shed = g.arrive("short", 0.7, 0.5)  # deadline 1.2, itself in time at 1.0
    assert isinstance(shed, Shed) and shed.reason == "deadline_unreachable"


def test_a_short_question_is_admitted_ahead_of_a_long_request_that_keeps_its_margin() -> None:
    """The control: deadline 1.5, margin 0.3; at 1.1 it still starts outside it."""
    g = gate()
    entry(g.arrive("long", 30.0, 0.0))
    entry(g.arrive("long", 1.5, 0.0))
    assert entry(g.arrive("short", 0.7, 0.5)).state == QUEUED


def test_the_start_forecast_leaves_out_the_slots_other_classes_hold_in_reserve() -> None:
    g = Gate(Controller(ControllerSettings(initial=2, adaptive=False)), 100, {"short": 0.5}, jitter=0.0)
    g.forecast.by_class, g.forecast.mean = {"short": 0.1, "long": 1.0}, 0.4
    g.budgets["short"] = 0.5
    for _ in range(3):
        g.forecast.arrived("short", 0.0)  # short questions are arriving: their slot is not lent to long ones
    entry(g.arrive("long", 30.0, 0.0))  # runs until 1.0; the other slot is the short class's
    # Its only slot frees at 1.0, past its deadline less the margin: shed, though a slot is free now.
    shed = g.arrive("long", 1.1, 0.0)
    assert isinstance(shed, Shed) and shed.reason == "deadline_unreachable"
    assert entry(g.arrive("long", 1.3, 0.0)).state == QUEUED  # the control: 1.0 is in time for this one
    short = entry(g.arrive("short", 0.5, 0.0))
    assert short.state == STARTED  # the reserved slot
    # With the reserved slot busy, the replay would hand the short one's slot to the long waiters
    # (free at 0.1): they drain on one slot only, so a second long waiter starts at 2.0, not 1.0.
    assert isinstance(g.arrive("long", 2.1, 0.0), Shed)
    assert entry(g.arrive("long", 3.0, 0.0)).state == QUEUED
