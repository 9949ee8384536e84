"""The queue's shortcuts change no decision: an arrival or a pass settled by the cheap bound (no replay of
the queue) is decided as the full replay decides it, at light load and at overload, with reserves."""

from __future__ import annotations

import random

import pytest

from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.entry import Entry
from middleware.buffer.queue import Gate
from tests.middleware.buffer.clock import poisson

HOLD = {"short": 0.25, "code": 0.5, "long": 1.15}
TIGHT = {"short": 0.6, "code": 1.2, "long": 1.8}  # the benchmark's budgets: a few holds each
DEFAULT = {"short": 5.0, "code": 15.0, "long": 30.0}  # the shipped budgets: the bound settles most
RESERVE = {"short": 0.25, "long": 0.25}


class Counting(Gate):
    """The gate as it is, counting how often its shortcuts settle a decision."""

    settled = 0

    def _surely_in_time(self, entry: Entry, now: float) -> bool:
        sure = super()._surely_in_time(entry, now)
        self.settled += sure
        return sure

    def _ends_before(self, now: float, deadline: float | None, margin: float) -> bool:
        sure = super()._ends_before(now, deadline, margin)
        self.settled += sure
        return sure


class Replaying(Gate):
    """The gate without its shortcuts: every decision from the full replay."""

    def _surely_in_time(self, entry: Entry, now: float) -> bool:
        return False

    def _ends_before(self, now: float, deadline: float | None, margin: float) -> bool:
        return False


def draw(rng: random.Random) -> str:
    x = rng.random()
    return "short" if x < 0.6 else "code" if x < 0.75 else "long"


def outcomes(
    kind: type[Gate], load: float, budgets: dict[str, float], seed: int
) -> tuple[Gate, list[tuple[str, float, str, float]]]:
    g = kind(Controller(ControllerSettings(initial=4, adaptive=False)), 64, RESERVE, jitter=0.0)
    capacity = 4 / sum(share * HOLD[c] for c, share in (("short", 0.6), ("code", 0.15), ("long", 0.25)))
    admitted = poisson(g, 30.0, load * capacity, draw, HOLD, budgets, seed)
    return g, [(e.cls, e.arrival, e.state, e.started_at) for e in admitted]


@pytest.mark.parametrize("budgets", [TIGHT, DEFAULT], ids=["tight", "default"])
@pytest.mark.parametrize("load", [0.5, 1.0, 2.0, 4.0])
def test_the_shortcuts_admit_shed_and_order_exactly_as_the_full_replay(
    load: float, budgets: dict[str, float]
) -> None:
    settled = 0
    for seed in (1, 2):
        fast, got = outcomes(Counting, load, budgets, seed)
        _, want = outcomes(Replaying, load, budgets, seed)
        assert got == want
        assert isinstance(fast, Counting)
        settled += fast.settled
    if budgets is DEFAULT:
        assert settled > 0  # the control: the shortcuts were taken, so the comparison says something
