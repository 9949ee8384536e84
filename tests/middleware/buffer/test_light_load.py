"""At light load nothing is refused for an error the forecast does not make: a request predicted to start
before its deadline is admitted when the holds it waits on are steady (however close to its deadline), and
shed when their measured spread could make it late, when too few holds were seen to know their spread, or
when a waiter it passes may still take a slot before it; nor for work the forecast counts twice: the short
questions expected to arrive push a long request back only by what the slot they keep in reserve cannot
take."""

from __future__ import annotations

from collections.abc import Mapping

from middleware.buffer.config import DEFAULT_RESERVE
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.forecast import RATE_WINDOW, TRUSTED
from middleware.buffer.queue import QUEUED, STARTED, Entry, Gate, Shed

HOLD = {"short": 0.25, "long": 1.15}  # the benchmark fake's holding times, near enough
SHORT_BUDGET = 0.595
# Holds as steady as the benchmark's fake keeps them: a couple of ms either way (enough to trust the spread).
STEADY = tuple(1.15 + (0.002 if k % 2 else -0.002) for k in range(TRUSTED + 2))


def busy_gate(long_holds: tuple[float, ...] = STEADY, reserve: Mapping[str, float] = DEFAULT_RESERVE) -> Gate:
    """Four slots, the holding times measured (the long ones as ``long_holds``), then at 1.0 s: three long
    requests running (free at 1.50, 1.55 and 1.60 by their mean), one short (free at 1.05) and two short
    ones waiting, which take 1.05 and 1.30. The next short questions are predicted to start at 1.50,
    1.55, 1.55 and 1.60 (their deadline 1.595)."""
    g = Gate(Controller(ControllerSettings(initial=4, adaptive=False)), 64, reserve, jitter=0.0)
    for k, held in enumerate(long_holds):
        g.forecast.observe("short", HOLD["short"] + (0.002 if k % 2 else -0.002))
        g.forecast.observe("long", held)
    for at in (0.35, 0.40, 0.45):
        assert entry(g.arrive("long", 1.786, at)).state == STARTED
    assert entry(g.arrive("short", SHORT_BUDGET, 0.8)).state == STARTED
    for at in (0.95, 0.96):
        assert entry(g.arrive("short", SHORT_BUDGET, at)).state == QUEUED
    return g


def entry(result: Entry | Shed) -> Entry:
    assert isinstance(result, Entry), result
    return result


def shed(result: Entry | Shed) -> bool:
    return isinstance(result, Shed) and result.reason == "deadline_unreachable"


def test_short_questions_predicted_to_start_in_time_behind_a_burst_are_admitted() -> None:
    g = busy_gate()  # a steady upstream: the long requests held their slots 1.15 s, give or take 2 ms
    # Their starts (1.50, 1.55, 1.55) come 95, 45 and 45 ms before their deadline (1.595): well outside
    # three expected errors of starts that wait on one hold known to a few ms.
    for _ in range(3):
        assert entry(g.arrive("short", SHORT_BUDGET, 1.0)).state == QUEUED
    # The control: the next one would start at 1.60, past its deadline.
    assert shed(g.arrive("short", SHORT_BUDGET, 1.0))


def test_a_start_within_the_measured_spread_of_the_holds_of_its_deadline_is_still_shed() -> None:
    # Long requests held their slots 1.0 to 1.3 s (1.15 on average): the one whose slot the question
    # waits for may well free after its deadline.
    g = busy_gate(long_holds=(1.15, 1.3, 1.0) * TRUSTED)
    assert shed(g.arrive("short", SHORT_BUDGET, 1.0))


def test_a_spread_from_too_few_holds_is_not_trusted() -> None:
    # Three long holds that happened to agree say little about the next one: the question 95 ms before
    # its deadline is judged with the full allowance (a fifth of its budget, 119 ms), and shed.
    assert shed(busy_gate(long_holds=(1.15,) * 3).arrive("short", SHORT_BUDGET, 1.0))


def queue_before_a_long_waiter(reserve: Mapping[str, float]) -> Gate:
    """Four short questions running (free at 1.015, 1.035, 1.055 and 1.075), a long request waiting since
    0.90, then eight short questions, which go ahead of it. The next short question, at 1.0, is replayed
    to start at 1.515, 80 ms before its deadline, after the eight and ahead of the long request."""
    g = Gate(Controller(ControllerSettings(initial=4, adaptive=False)), 64, reserve, jitter=0.0)
    for k in range(TRUSTED + 2):
        g.forecast.observe("short", HOLD["short"] + (0.002 if k % 2 else -0.002))
        g.forecast.observe("long", STEADY[k])
    for at in (0.765, 0.785, 0.805, 0.825):
        assert entry(g.arrive("short", SHORT_BUDGET, at)).state == STARTED
    assert entry(g.arrive("long", 1.786, 0.90)).state == QUEUED
    for k in range(8):
        assert entry(g.arrive("short", SHORT_BUDGET, 0.91 + 0.01 * k)).state == QUEUED
    return g


def test_a_question_that_passes_a_slower_waiter_is_judged_by_its_own_start() -> None:
    # Without reserves, the long request starts after it whatever happens: 80 ms is well outside three
    # expected errors of its start.
    assert entry(queue_before_a_long_waiter({}).arrive("short", SHORT_BUDGET, 1.0)).state == QUEUED


def test_a_question_passing_a_waiter_that_takes_the_next_slot_first_keeps_the_full_allowance() -> None:
    # The control: the long class keeps a reserved slot it does not fill, so the long request takes the
    # first slot to free, and each question after it starts a slot later than the replay says.
    assert shed(queue_before_a_long_waiter(DEFAULT_RESERVE).arrive("short", SHORT_BUDGET, 1.0))


LONG_BUDGET = 1.786


def burst_of_long_requests(shorts_a_second: float) -> Gate:
    """Four slots, the default reserves, steady holds, short questions arriving at ``shorts_a_second``
    (their slot kept from long requests for them), then at 10.0: three long requests running (free at
    10.10, 10.40 and 10.50), one short on its own slot, three long ones waiting, which take those three
    slots. A long request arriving now starts on the long requests' slots at about 11.26, its deadline
    11.786."""
    g = Gate(Controller(ControllerSettings(initial=4, adaptive=False)), 64, DEFAULT_RESERVE, jitter=0.0)
    for _ in range(4):
        g.forecast.observe("short", HOLD["short"])
        g.forecast.observe("long", HOLD["long"])
    for at in (8.95, 9.25, 9.35):
        assert entry(g.arrive("long", LONG_BUDGET, at)).state == STARTED
    for k in range(int(shorts_a_second * 4 * RATE_WINDOW), 0, -1):  # long enough for a steady rate
        g.forecast.arrived("short", 9.9 - k / shorts_a_second)
    assert entry(g.arrive("short", SHORT_BUDGET, 9.9)).state == STARTED
    for at in (9.91, 9.92, 9.93):
        assert entry(g.arrive("long", LONG_BUDGET, at)).state == QUEUED
    return g


def test_a_long_request_is_not_pushed_back_by_the_short_questions_their_kept_slot_takes() -> None:
    # The short questions bring about one slot's worth of work, which the slot they keep takes: they
    # do not delay it on the long requests' slots, where it starts 0.52 s before its deadline.
    g = burst_of_long_requests(shorts_a_second=4.0)
    assert g.reserve.kept_from("long", 4, 10.0) == {"short": 1}
    assert entry(g.arrive("long", LONG_BUDGET, 10.0)).state == QUEUED


def test_a_long_request_is_pushed_back_by_the_short_questions_their_kept_slot_cannot_take() -> None:
    """The control: twice as many short questions, the work their slot cannot take spreads over the long
    requests' slots, and it would start past its deadline."""
    g = burst_of_long_requests(shorts_a_second=8.0)
    shed = g.arrive("long", LONG_BUDGET, 10.0)
    assert isinstance(shed, Shed) and shed.reason == "deadline_unreachable"
