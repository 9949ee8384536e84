"""The concurrency controller on a fake clock: where L settles, how it follows the upstream, its bounds."""

from __future__ import annotations

from middleware.buffer.controller import Controller, ControllerSettings, step
from middleware.buffer.cost import PromptCost, ReplyCost
from middleware.buffer.queue import Gate
from tests.middleware.buffer.slots import SlotServer, run_saturated


def gate(initial: int, **settings: object) -> Gate:
    return Gate(Controller(ControllerSettings(initial=initial, **settings)), bound=1000)  # type: ignore[arg-type]


def test_limit_learns_the_slot_count_from_one_within_sixty_completions() -> None:
    g = gate(initial=1)
    limits = run_saturated(g, SlotServer(slots=4), 200)
    assert all(abs(limit - 4) <= 1 for limit in limits[60:]), limits
    assert 4 in limits[60:]


def test_limit_seeded_too_high_comes_down_to_the_slot_count() -> None:
    g = gate(initial=12)
    server = SlotServer(slots=4)
    run_saturated(g, server, 20, most=1)  # light load first: the cost model learns unqueued TTFT
    assert g.limit == 12
    limits = run_saturated(g, server, 300)
    assert all(abs(limit - 4) <= 1 for limit in limits[150:]), limits


def test_limit_follows_the_slots_down_and_up_within_twenty_completions() -> None:
    g = gate(initial=1)
    server = SlotServer(slots=4)
    run_saturated(g, server, 100)
    server.slots = 2
    down = run_saturated(g, server, 60, seed=2)
    assert all(abs(limit - 2) <= 1 for limit in down[20:]), down
    server.slots = 4
    up = run_saturated(g, server, 60, seed=3)
    assert all(abs(limit - 4) <= 1 for limit in up[20:]), up


def test_limit_rests_mostly_at_the_slot_count_not_above() -> None:
    g = gate(initial=4)
    limits = run_saturated(g, SlotServer(slots=4), 400)
    above = sum(1 for limit in limits[60:] if limit > 4)
    assert above < len(limits[60:]) * 0.3


def test_limit_does_not_grow_while_under_used() -> None:
    c = Controller(ControllerSettings(initial=4))
    for _ in range(40):
        epoch = c.dispatched(in_flight=1)
        c.sample(epoch, 0.05, 100)
    assert c.limit == 4
    for _ in range(8):
        epoch = c.dispatched(in_flight=4)
        c.sample(epoch, 0.05, 100)
    assert c.limit > 4  # the positive control: fully used and calm, it grows


def test_limit_does_not_grow_while_the_upstream_reports_a_queue() -> None:
    c = Controller(ControllerSettings(initial=4))
    c.upstream_queue = 2
    for _ in range(40):
        c.sample(c.dispatched(in_flight=4), 0.05, 100)
    assert c.limit == 4
    c.upstream_queue = 0
    for _ in range(8):
        c.sample(c.dispatched(in_flight=4), 0.05, 100)
    assert c.limit == 5


def test_overload_signal_cuts_once_per_generation() -> None:
    c = Controller(ControllerSettings(initial=10))
    epochs = [c.dispatched(in_flight=i + 1) for i in range(10)]
    for epoch in epochs:  # a burst of 503s from requests sent together is one signal
        c.overload(epoch)
    assert c.limit == 9
    c.overload(c.dispatched(in_flight=1))
    assert c.limit == 8


def test_limit_stays_within_its_bounds() -> None:
    c = Controller(ControllerSettings(initial=3, minimum=2, maximum=5))
    for _ in range(10):
        c.overload(c.dispatched(in_flight=1))
    assert c.limit == 2
    for _ in range(200):
        c.sample(c.dispatched(in_flight=c.limit), 0.05, 100)
    assert c.limit == 5


def test_fixed_limit_never_moves() -> None:
    c = Controller(ControllerSettings(initial=1, adaptive=False))
    for _ in range(50):
        c.sample(c.dispatched(in_flight=1), 0.05, 100)
    c.overload(c.dispatched(in_flight=1))
    assert c.limit == 1


def test_reseed_caps_the_limit_at_the_reported_slots() -> None:
    c = Controller(ControllerSettings(initial=4))
    c.reseed(2)
    assert c.limit == 2
    for _ in range(100):
        c.sample(c.dispatched(in_flight=c.limit), 0.05, 100)
    assert c.limit == 2


def test_prompt_cost_fits_the_per_token_cost() -> None:
    cost = PromptCost(memory=100)
    for tokens in (50, 100, 1000, 2000) * 10:
        cost.add(tokens, 0.04 + 0.0005 * tokens)
    assert abs(cost.expected(1500) - 0.79) < 0.01
    assert abs(cost.expected(0) - 0.04) < 0.01


def test_long_prompts_alone_do_not_look_congested() -> None:
    """A slow sample because the prompt is long is not queueing: the limit still grows."""
    c = Controller(ControllerSettings(initial=4))
    for tokens in (50, 2000) * 20:
        c.sample(c.dispatched(in_flight=c.limit), 0.04 + 0.0005 * tokens, tokens)
    assert c.limit > 4


def test_steps_are_sized_for_one_to_sixty_four_slots() -> None:
    assert [step(n) for n in (1, 4, 8, 16, 36, 64)] == [1, 1, 1, 2, 3, 4]


def test_a_slow_ttft_is_not_queueing_while_the_upstream_reports_an_empty_queue() -> None:
    c = Controller(ControllerSettings(initial=4))
    for _ in range(20):
        c.sample(c.dispatched(in_flight=1), 0.05, 100)  # the cost model learns 50 ms
    c.upstream_queue = 0
    for _ in range(8):
        c.sample(c.dispatched(in_flight=4), 0.5, 100)  # ten times slower: the proxy's CPU, say
    assert c.limit >= 4
    c.upstream_queue = None  # positive control: with no word from the upstream, it is taken as queueing
    for _ in range(8):
        c.sample(c.dispatched(in_flight=c.limit), 0.5, 100)
    assert c.limit < 4


def settled_after(limits: list[int], slots: int) -> int:
    """Completions until L stayed within +-1 of ``slots`` for good."""
    return max((i + 1 for i, limit in enumerate(limits) if abs(limit - slots) > 1), default=0)


def test_limit_resettles_within_twenty_completions_and_never_two_past_the_slots_despite_jitter() -> None:
    for seed in range(8):
        g = gate(initial=1)
        server = SlotServer(slots=4, jitter=0.005)  # up to tens of ms of the proxy's own delay
        first = run_saturated(g, server, 80, seed=seed)
        server.slots = 2
        down = run_saturated(g, server, 50, seed=seed + 100)
        server.slots = 4
        up = run_saturated(g, server, 50, seed=seed + 200)
        assert settled_after(first, 4) <= 60, first
        assert settled_after(down, 2) <= 20, down
        assert settled_after(up, 4) <= 20, up
        assert max(first[settled_after(first, 4) :] + up[settled_after(up, 4) :]) <= 5, (first, up)


def calibrated(limit: int) -> Controller:
    """A controller whose cost model knows 50 ms for the prompt, with a 100 ms gap between slots freeing."""
    c = Controller(ControllerSettings(initial=limit, window=limit))
    c.slot_gap = 0.1
    for _ in range(1 + 4 * limit):  # the first has no cost model to be judged against; then whole windows
        c.sample(c.dispatched(in_flight=1), 0.05, 100)
    return c


def test_one_past_the_slots_is_congestion_though_most_requests_wait_only_a_moment() -> None:
    """Slots that free together let most requests of a window start almost at once; a few wait long."""
    c = calibrated(5)
    for excess in (0.004, 0.235, 0.031, 0.019, 0.008):
        c.sample(c.dispatched(in_flight=5), 0.05 + excess, 100)
    assert c.limit == 4


def test_one_stalled_sample_in_a_window_is_not_congestion() -> None:
    c = calibrated(4)
    for excess in (0.0, 0.3, 0.002, 0.001):  # the proxy's CPU stalled once
        c.sample(c.dispatched(in_flight=4), 0.05 + excess, 100)
    assert c.limit >= 4
    control = calibrated(4)  # two waited, and the mean excess is a fair share of the slot gap
    for excess in (0.0, 0.3, 0.05, 0.001):
        control.sample(control.dispatched(in_flight=4), 0.05 + excess, 100)
    assert control.limit < 4


def test_limit_grows_from_its_seed_on_replies_that_are_not_streamed() -> None:
    # A client that never streams gives no TTFT: its whole replies must still let L leave the seed when
    # the upstream has room (here 64 slots, 16 clients).
    g = gate(initial=4)
    limits = run_saturated(g, SlotServer(slots=64), 300, most=16, stream=False)
    assert min(limits[200:]) >= 16, limits


def test_limit_on_replies_that_are_not_streamed_stays_near_the_slots() -> None:
    # Whole replies tell queueing apart less sharply than first tokens: L may rest a little past the slots,
    # never far past them.
    for slots in (2, 4, 8):
        g = gate(initial=4)
        limits = run_saturated(g, SlotServer(slots=slots), 400, stream=False)
        settled = limits[100:]
        assert slots in settled or slots + 1 in settled, (slots, limits)
        assert max(settled) <= 1.5 * slots + 1, (slots, limits)


def test_reply_cost_fits_prompt_and_completion_tokens() -> None:
    cost = ReplyCost(memory=200)
    for prompt, completion in ((100, 10), (1000, 10), (100, 300), (1000, 300), (500, 50)) * 20:
        cost.add(prompt, completion, 0.05 + 0.0002 * prompt + 0.005 * completion)
    assert abs(cost.expected(2000, 100) - (0.05 + 0.4 + 0.5)) < 0.01
    assert abs(cost.expected(100, 400) - (0.05 + 0.02 + 2.0)) < 0.01


def test_reply_cost_keeps_the_completion_slope_when_prompts_never_vary() -> None:
    cost = ReplyCost(memory=200)
    for completion in (10, 50, 300, 120) * 20:
        cost.add(100, completion, 0.07 + 0.005 * completion)
    assert abs(cost.expected(100, 200) - 1.07) < 0.01


def test_a_few_milliseconds_of_delay_on_an_instant_upstream_are_not_queueing() -> None:
    def run(delay: float) -> int:
        c = Controller(ControllerSettings(initial=4))
        c.slot_gap = 0.0002  # replies take a millisecond: slots free a fifth of one apart
        for i in range(200):
            epoch = c.dispatched(in_flight=c.limit)
            # The proxy's CPU delays every other first token by ``delay``.
            c.sample(epoch, 0.0003 + (delay if i % 2 else 0.0), 20)
        return c.limit

    assert run(0.008) > 4  # fully used and only the proxy's own delay: it grows
    assert run(0.05) < 4  # the control: 50 ms of waiting is queueing, even on an instant upstream
