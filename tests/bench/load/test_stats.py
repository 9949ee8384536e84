"""Figures of a cell from its records."""

from __future__ import annotations

import numpy as np
import pytest

from bench.load.client import ERROR, OK, SHED, Record
from bench.load.runner import Cell
from bench.load.schedule import Load
from bench.load.stats import percentile, ratio, summarize


def rec(outcome: str = OK, status: int = 200, ttft: float | None = 0.1, e2e: float = 0.5, error: str = "",
        sent: float = 0.0, tokens: int = 10) -> Record:  # fmt: skip
    return Record(
        "short", sent, 0.0, status, outcome, error, ttft, e2e, (0.01,) * (tokens - 1), tokens, 5, True
    )


def test_percentiles_match_numpy() -> None:
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4]
    for q in (50, 90, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None


def test_summary_counts_shed_and_errors_apart_and_times_only_successes() -> None:
    records = (
        rec(ttft=0.1), rec(ttft=0.2), rec(ttft=0.3),
        rec(SHED, 429, None, 0.002, "rate_limit_exceeded"), rec(SHED, 503, None, 0.004, "ServiceUnavailable"),
        rec(ERROR, 200, 5.0, 9.0, "connection_cut"),
        rec(ERROR, 0, None, 10.0, "unfinished_at_end"),
    )  # fmt: skip
    cell = Cell("a", "http://x/v1", "m", Load("rate", 2.0), 0.0, 2.0, 0.1, records)
    s = summarize(cell)
    assert (s.requests, s.ok, s.shed, s.errors, s.unfinished) == (7, 3, 2, 1, 1)
    assert s.ttft_p50 == pytest.approx(0.2) and s.ttft_p99 == pytest.approx(0.298)
    assert s.shed_latency_p50 == pytest.approx(0.003)
    assert s.by_status == {0: 1, 200: 4, 429: 1, 503: 1}
    assert s.by_error == {
        "rate_limit_exceeded": 1,
        "ServiceUnavailable": 1,
        "connection_cut": 1,
        "unfinished_at_end": 1,
    }
    assert s.completed_rps == pytest.approx(1.5) and s.output_tps == pytest.approx(15.0)
    assert s.offered_rps == 2.0 and s.itl_p50 == pytest.approx(0.01)


def test_a_closed_loop_reports_its_achieved_send_rate() -> None:
    records = tuple(rec(sent=i * 0.5) for i in range(5))
    s = summarize(Cell("a", "u", "m", Load("concurrency", 1), 0.0, 2.5, 0.0, records))
    assert s.offered_rps == pytest.approx(2.0)


def test_ratio_needs_both_sides() -> None:
    assert ratio(2.0, 1.0) == 2.0
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None
