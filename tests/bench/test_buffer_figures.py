"""bench.buffer's figures from shots: Fluido's own time from Server-Timing, TTFT p99 per window of send
time, the long requests that waited past their budget without being served in time or shed, and the shed
probe's figures (a p99 only from enough answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.buffer.plot import draw_timeline
from bench.buffer.probe import Shot, proxy_ms
from bench.buffer.scenarios import Cell
from bench.buffer.table import p99_or_max, probe_figures, starved, tail, windows


def shot(cls: str = "long", status: int = 200, code: str = "", ttft: float | None = 0.1,
         queue_ms: float | None = None, sent_at: float = 0.0) -> Shot:  # fmt: skip
    return Shot(cls, status, code, ttft, 1.0, status == 200, False, 1, queue_ms, None, sent_at)


def test_fluidos_own_time_is_read_from_server_timing() -> None:
    assert proxy_ms("proxy;dur=1.25") == 1.25
    assert proxy_ms("proxy;dur=0.50, upstream;dur=30.00") == 0.5
    assert proxy_ms("upstream;dur=3") is None and proxy_ms(None) is None


def test_ttft_p99_is_given_per_window_of_send_time() -> None:
    shots = [shot(ttft=0.1, sent_at=1.0), shot(ttft=0.2, sent_at=2.0), shot(ttft=3.0, sent_at=12.0)]
    first, second = windows(shots).split()
    assert first == "199(2)"  # p99 of 100 and 200 ms (interpolated), two served
    assert second == "3000(1)"
    assert windows([shot(status=429, ttft=None, sent_at=5.0)]).strip() == "-(0)"  # none served: no p99


def test_long_requests_that_waited_their_budget_are_counted_however_they_ended() -> None:
    cell = Cell(
        [
            shot(queue_ms=500.0),  # served in time
            shot(queue_ms=2500.0),  # served, but after waiting past its 2 s budget
            shot(status=503, code="expired", ttft=None),  # waited its budget, then refused
            shot(status=0, code="gave_up", ttft=None),  # its client gave up waiting
            shot(status=429, code="deadline_unreachable", ttft=None),  # shed at arrival: fine
            shot(cls="short", status=503, code="expired", ttft=None),  # not a long request
        ],
        1.0,
        1.0,
    )
    assert starved(cell, budget=2.0) == (2, 1, 1, 1)


def test_the_timeline_plot_is_drawn_from_served_requests(tmp_path: Path) -> None:
    served = [shot(ttft=0.1, sent_at=1.0), shot(ttft=0.3, sent_at=12.0)]
    path = draw_timeline(served, [*served, shot(status=429, ttft=None, sent_at=3.0)], 10.0, tmp_path)
    assert path.parent == tmp_path and path.read_bytes().startswith(b"\x89PNG")


def test_a_p99_is_given_from_a_hundred_answers_and_otherwise_only_the_max() -> None:
    hundred = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert tail(hundred) == "p50 50.5 / p99 99.0 / max 100.0 ms (100)"
    assert tail(hundred[:99]) == "p50 50.0 / p99 - / max 99.0 ms (99)"
    assert p99_or_max(hundred) == (pytest.approx(0.09901), False)
    assert p99_or_max(hundred[:99]) == (0.099, True)


def test_the_probes_figures_are_the_arrival_the_read_and_the_wait_between() -> None:
    cell = Cell([], 1.0, 1.0)
    cell.probe = [
        {
            "status": 429,
            "code": "deadline_unreachable",
            "e2e": 0.004,
            "arrive": 0.001,
            "server_ms": 0.5,
            "write": 0.0002,
        },
        {
            "status": 429,
            "code": "deadline_unreachable",
            "e2e": 0.002,
            "arrive": None,
            "server_ms": None,
            "write": None,
        },
        {
            "status": 503,
            "code": "expired",
            "e2e": 2.0,
            "arrive": 2.0,
            "server_ms": 1.0,
        },  # not shed at arrival
        {"status": 200, "code": "", "e2e": 1.0, "arrive": 1.0, "server_ms": None},
    ]
    figures = dict(probe_figures(cell))
    assert figures["arrive at the probe's socket (kernel receive stamp)"] == [0.001]  # unstamped: left out
    assert figures["read by the probe (its parser, user space)"] == [0.004, 0.002]
    assert figures["  of which the read after the arrival"] == [pytest.approx(0.003)]
    assert figures["server side (Fluido's Server-Timing)"] == [0.0005]
    assert figures["before: the probe's clock read to its transmit stamp"] == [0.0002]
