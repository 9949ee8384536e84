"""The buffer benchmark's fake-clock replay: every request is accounted for, the load is the benchmark's,
and a shed request is judged by admitting it anyway on a copy of the run."""

from __future__ import annotations

from bench.buffer.replay import Run, gate, hindsight, requests
from bench.buffer.scenarios import capacity_rps
from bench.buffer.simulate import Options, simulate
from bench.buffer.verdict import cause
from middleware.buffer.config import DEFAULT_RESERVE
from middleware.buffer.queue import Shed


def test_every_request_is_served_shed_or_expired_and_the_slots_carry_the_load() -> None:
    out = simulate(Options(load=2.0, seconds=20.0, judge=False), seed=7, body_seed=3)
    served = sum(map(len, out.ttfts.values()))
    assert served + len(out.shed) + out.expired == out.sent
    assert abs(out.sent / 20.0 - 2.0 * capacity_rps()) < 0.25 * capacity_rps()  # Poisson at 2x
    assert len(out.shed) > 0 and out.slot_use > 0.9  # overloaded: some refused, the slots busy
    assert all(t >= 0 for got in out.ttfts.values() for t in got)


def test_a_shed_request_is_judged_in_hindsight_and_by_the_step_that_refused_it() -> None:
    reqs = requests(4.0, 10.0, 7, 3, 0.0, 0.002)
    budgets = {"short": 0.595, "long": 1.786}
    verdicts: list[tuple[str, str]] = []

    def judged(run: Run, i: int, shed: Shed) -> None:
        cls = run.reqs[i].cls
        if len(verdicts) < 20:  # each judgement replays a copy of the run
            verdicts.append((hindsight(run, i), cause(run.gate, cls, budgets[cls], run.now)))

    run = Run(gate(dict(DEFAULT_RESERVE)), reqs, budgets, on_shed=judged)
    for i, r in enumerate(reqs):
        run.push(r.at, "arrive", i)
    while run.step():
        pass
    assert verdicts  # at 4x some are shed
    kinds = {"idle slot", "reserve", "late", "margin", "stretch", "push", "passes"}
    assert all(h.startswith(("in time", "late")) and c.split(" (")[0] in kinds for h, c in verdicts)
    assert any(h == "late" for h, _ in verdicts)  # at 4x most could not have started in time
