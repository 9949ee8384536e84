"""The admission queue on a fake clock: EDF order, reservations, shedding, cancellation, expiry."""

from __future__ import annotations

import pytest

from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import CANCELLED, EXPIRED, QUEUED, STARTED, Entry, Gate, Shed


def gate(limit: int = 1, bound: int = 100, reserve: dict[str, float] | None = None) -> Gate:
    controller = Controller(ControllerSettings(initial=limit, adaptive=False))
    return Gate(controller, bound, reserve, jitter=0.0)


def measured(g: Gate, seconds: float) -> None:
    """As if requests of every class had been seen to hold their slot ``seconds``."""
    g.forecast.mean = seconds


def entry(result: Entry | Shed) -> Entry:
    assert isinstance(result, Entry), result
    return result


def test_requests_start_at_once_while_slots_are_free() -> None:
    g = gate(limit=2)
    assert entry(g.arrive("short", 1.0, 0.0)).state == STARTED
    assert entry(g.arrive("short", 1.0, 0.0)).state == STARTED
    assert entry(g.arrive("short", 1.0, 0.0)).state == QUEUED
    assert (g.in_flight, g.depth) == (2, 1)


def test_queue_serves_the_earliest_deadline_first() -> None:
    g = gate(limit=1)
    running = entry(g.arrive("long", 30.0, 0.0))
    long_ = entry(g.arrive("long", 30.0, 0.1))
    short = entry(g.arrive("short", 2.0, 0.2))  # arrived later, but its deadline is earlier
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is short
    assert g.pop_ready(1.0) is None  # one slot: nothing else starts
    g.finish(short, 1.5)
    assert g.pop_ready(1.5) is long_


def test_fifo_order_serves_in_arrival_order_whatever_the_deadlines() -> None:
    controller = Controller(ControllerSettings(initial=1, adaptive=False))
    g = Gate(controller, 100, jitter=0.0, fifo=True)
    running = entry(g.arrive("long", 30.0, 0.0))
    long_ = entry(g.arrive("long", 30.0, 0.1))
    short = entry(g.arrive("short", 2.0, 0.2))
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is long_
    g.finish(long_, 2.0)
    assert g.pop_ready(2.0) is short


def test_equal_deadlines_are_served_in_arrival_order() -> None:
    g = gate(limit=1)
    running = entry(g.arrive("short", 2.0, 0.0))
    first, second = entry(g.arrive("short", 2.0, 0.5)), entry(g.arrive("short", 2.0, 0.5))
    g.finish(running, 0.6)
    assert g.pop_ready(0.6) is first
    g.finish(first, 0.7)
    assert g.pop_ready(0.7) is second


def test_long_requests_are_not_starved_by_a_stream_of_short_ones() -> None:
    """EDF: once a long request's deadline is the earliest, it goes before newer short ones."""
    g = gate(limit=1)
    running = entry(g.arrive("short", 2.0, 0.0))
    long_ = entry(g.arrive("long", 5.0, 0.0))
    now, started = 0.0, []
    for _ in range(10):
        entry(g.arrive("short", 3.0, now))
        now += 1.0
        g.finish(running, now)
        running = g.pop_ready(now)
        assert running is not None
        started.append(running)
    assert long_ in started


def test_queue_at_its_bound_sheds_with_queue_full() -> None:
    g = gate(limit=1, bound=2)
    for _ in range(3):
        entry(g.arrive("short", 100.0, 0.0))
    shed = g.arrive("short", 100.0, 0.0)
    assert isinstance(shed, Shed) and shed.reason == "queue_full"
    assert 1.0 <= shed.retry_after <= 60.0


def test_request_that_cannot_start_before_its_deadline_is_shed_at_once() -> None:
    g = gate(limit=1)
    entry(g.arrive("short", 4.0, 0.0))  # running
    for _ in range(3):
        entry(g.arrive("short", 4.0, 0.0))  # queued before any drain rate was measured
    measured(g, 2.0)  # a request holds its slot 2 s: three ahead, it would start in 8 s
    shed = g.arrive("short", 5.0, 0.0)
    assert isinstance(shed, Shed) and shed.reason == "deadline_unreachable"
    assert 1.0 <= shed.retry_after <= 60.0
    assert g.depth == 3  # nothing was queued for it
    # Positive control: a request whose budget covers the predicted start, with a margin of the gap
    # between two slots freeing (2 s on one slot), is queued.
    assert entry(g.arrive("short", 10.5, 0.0)).state == QUEUED


def test_edf_prediction_counts_only_the_requests_served_before_this_one() -> None:
    g = gate(limit=1)
    first = entry(g.arrive("short", 10.0, 0.0))
    g.finish(first, 2.0)
    entry(g.arrive("long", 100.0, 2.0))
    for _ in range(5):
        entry(g.arrive("long", 100.0, 2.0))  # later deadlines than the short one: it goes first
    # It starts at 4 (the running one's end), within its deadline less the 2 s margin of one slot.
    assert entry(g.arrive("short", 4.5, 2.0)).state == QUEUED


def test_retry_after_is_the_predicted_drain_time_clamped_to_one_to_sixty_seconds() -> None:
    g = gate(limit=1, bound=1000)
    entry(g.arrive("short", 100.0, 0.0))  # running since 0
    for _ in range(5):
        entry(g.arrive("short", 100.0, 0.0))
    measured(g, 4.0)
    assert g.retry_after(0.0) == pytest.approx(20.0)  # the fifth waiter starts at 4 x 5 s
    for _ in range(50):
        entry(g.arrive("short", 1000.0, 0.0))
    assert g.retry_after(0.0) == 60.0
    measured(g, 0.001)
    assert g.retry_after(0.0) == 1.0


def test_retry_after_is_jittered_within_twenty_percent() -> None:
    values = iter([0.0, 1.0])
    controller = Controller(ControllerSettings(initial=1, adaptive=False))
    g = Gate(controller, 10, jitter=0.2, rng=lambda: next(values))
    entry(g.arrive("short", 100.0, 0.0))
    entry(g.arrive("short", 100.0, 0.0))
    measured(g, 10.0)
    assert g.retry_after(0.0) == pytest.approx(8.0)
    assert g.retry_after(0.0) == pytest.approx(12.0)


def test_the_forecast_knows_long_requests_hold_their_slot_longer() -> None:
    g = gate(limit=1)
    g.forecast.observe("short", 0.2)
    g.forecast.observe("long", 2.0)
    entry(g.arrive("long", 100.0, 0.0))  # running: frees at ~2 s
    assert entry(g.arrive("short", 2.5, 0.0)).state == QUEUED
    late = g.arrive("short", 1.5, 0.0)  # starts after the running long one: past 1.5
    assert isinstance(late, Shed)


def test_cancelled_waiter_leaves_the_queue_at_once() -> None:
    g = gate(limit=1)
    running = entry(g.arrive("short", 10.0, 0.0))
    gone = entry(g.arrive("short", 10.0, 0.0))
    stays = entry(g.arrive("short", 10.0, 0.0))
    g.cancel(gone)
    assert gone.state == CANCELLED and g.depth == 1
    g.finish(running, 1.0)
    assert g.pop_ready(1.0) is stays


def test_waiters_past_their_deadline_expire() -> None:
    g = gate(limit=1)
    entry(g.arrive("short", 10.0, 0.0))
    short = entry(g.arrive("short", 2.0, 0.0))
    long_ = entry(g.arrive("long", 30.0, 0.0))
    assert g.next_deadline() == 2.0
    assert g.expire(1.9) == []
    assert g.expire(2.0) == [short]
    assert short.state == EXPIRED and long_.state == QUEUED and g.depth == 1
    assert g.next_deadline() == 30.0


def test_reserved_share_keeps_slots_for_its_class() -> None:
    g = gate(limit=4, reserve={"short": 0.25})
    g.forecast.by_class, g.forecast.mean = {"short": 0.1, "long": 1.0}, 0.4
    g.budgets["short"] = 0.5  # a long request would hold the slot past a short one's budget ...
    for _ in range(3):
        g.forecast.arrived("short", 0.0)  # ... and short questions are arriving: the slot is kept
    longs = [entry(g.arrive("long", 30.0, 0.0)) for _ in range(4)]
    assert [e.state for e in longs] == [STARTED, STARTED, STARTED, QUEUED]
    short = entry(g.arrive("short", 2.0, 0.0))
    assert short.state == STARTED  # the reserved slot
    assert g.in_flight == 4


def test_without_a_reservation_long_requests_take_every_slot() -> None:
    g = gate(limit=4)
    longs = [entry(g.arrive("long", 30.0, 0.0)) for _ in range(4)]
    assert all(e.state == STARTED for e in longs)
    assert entry(g.arrive("short", 2.0, 0.0)).state == QUEUED


def test_reservation_unused_by_its_class_is_not_taken_by_others_but_its_class_may_exceed_it() -> None:
    g = gate(limit=3, reserve={"short": 0.34})
    shorts = [entry(g.arrive("short", 2.0, 0.0)) for _ in range(3)]
    assert all(e.state == STARTED for e in shorts)  # a class may use more than its share


def test_slot_use_never_exceeds_the_limit() -> None:
    g = gate(limit=3)
    entries = [g.arrive("short", 100.0, 0.0) for _ in range(10)]
    assert g.in_flight == 3
    now = 0.0
    for e in entries[:3]:
        now += 1
        g.finish(entry(e), now)
        assert g.pop_ready(now) is not None
        assert g.pop_ready(now) is None
        assert g.in_flight == 3


def test_finish_is_idempotent_and_ignores_waiters() -> None:
    g = gate(limit=1)
    running = entry(g.arrive("short", 10.0, 0.0))
    waiting = entry(g.arrive("short", 10.0, 0.0))
    g.finish(waiting, 1.0)
    g.finish(running, 1.0)
    g.finish(running, 1.0)
    assert g.in_flight == 0


def test_a_request_that_would_push_a_waiter_past_its_deadline_is_shed() -> None:
    g = gate(limit=1)
    entry(g.arrive("long", 100.0, 0.0))  # running
    measured(g, 1.0)  # one start per second
    long_ = entry(g.arrive("long", 2.5, 0.0))  # starts at ~1 s: within its 2.5 s
    # Goes first (deadline 2.0) and pushes the long one to ~2 s, which still meets 2.5: admitted.
    assert entry(g.arrive("short", 2.0, 0.0)).state == QUEUED
    late = g.arrive("short", 2.2, 0.0)  # would push the long one to ~3 s, past its 2.5
    assert isinstance(late, Shed) and late.reason == "deadline_unreachable"
    assert long_.state == QUEUED and g.depth == 2


def test_time_spent_launching_the_upstream_is_not_counted_as_holding_a_slot() -> None:
    """The first request to an embedded server waits for it to start: that wait must not make every later
    request look hopeless (and be shed) as if the class took that long to serve."""
    launched = gate(limit=1)
    first = entry(launched.arrive("short", 5.0, 0.0))
    first.launch = 9.0  # nine of its ten seconds went to starting the server
    launched.finish(first, 10.0)
    assert launched.forecast.service("short") == pytest.approx(1.0)

    control = gate(limit=1)  # the same ten seconds with no launch: all of it is service
    second = entry(control.arrive("short", 5.0, 0.0))
    control.finish(second, 10.0)
    assert control.forecast.service("short") == pytest.approx(10.0)
