"""The start-time forecast: the queue replayed on the slots, per class, and room for later arrivals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from middleware.buffer.forecast import Forecast


@dataclass
class Job:
    cls: str
    started_at: float = 0.0


def trained() -> Forecast:
    f = Forecast()
    f.observe("short", 0.2)
    f.observe("long", 2.0)
    return f


def test_nothing_is_predicted_before_anything_was_measured() -> None:
    assert Forecast().starts(0.0, [], 1, [Job("short")]) is None


def test_waiters_take_the_first_slot_to_free_and_hold_it_for_their_class() -> None:
    f = trained()
    running = [Job("long", started_at=0.0), Job("short", started_at=0.0)]
    # Two slots: the short one frees at 0.2, the long one at 2.0.
    starts = f.starts(0.0, running, 0, [Job("short"), Job("short"), Job("long"), Job("short")])
    assert starts == pytest.approx([0.2, 0.4, 0.6, 2.0])


def test_a_running_request_past_its_mean_is_expected_to_end_soon() -> None:
    f = trained()
    starts = f.starts(5.0, [Job("long", started_at=0.0)], 0, [Job("short")])
    assert starts == pytest.approx([5.2])  # a tenth of the long mean from now


def test_free_slots_start_waiters_now() -> None:
    assert trained().starts(1.0, [], 2, [Job("long"), Job("long"), Job("short")]) == pytest.approx([1, 1, 3])


def test_requests_expected_to_pass_push_the_start_back() -> None:
    f = trained()
    for i in range(30):
        f.arrived("short", i * 0.1)  # 10 short requests a second, 0.2 s each: 2 slot-seconds per second
    now = 3.0
    budgets = {"short": 0.5, "long": 5.0}
    # A long request predicted to start at 4.0 with its deadline at 8.0: shorts arriving before 7.5 pass it.
    pushed = f.with_arrivals(now, 4.0, "long", 8.0, budgets, slots=4)
    assert pushed > 4.0
    # Quicker requests pass it whenever its slack allows: until it starts, whatever its deadline.
    assert f.with_arrivals(now, 3.2, "long", now + 0.5, budgets, slots=4) > 3.2
    # Nothing passes a request whose deadline is as early as the short class's.
    assert f.with_arrivals(now, 3.2, "short", now + 0.5, budgets, slots=4) == pytest.approx(3.2)
    # Nor when no other class arrives.
    quiet = trained()
    assert quiet.with_arrivals(now, 4.0, "long", 8.0, budgets, slots=4) == 4.0
