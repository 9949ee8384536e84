"""bench.buffer's figures from shots: Fluido's own time from Server-Timing, TTFT p99 per window of send
time, and the long requests that waited past their budget without being served in time or shed."""

from __future__ import annotations

from pathlib import Path

from bench.buffer.plot import draw_timeline
from bench.buffer.probe import Shot, proxy_ms
from bench.buffer.scenarios import Cell
from bench.buffer.table import starved, windows


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
