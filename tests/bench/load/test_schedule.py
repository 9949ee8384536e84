"""Arrival schedules: the right mean rate and spread, reproducible; the sweep's rates."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from bench.load.schedule import Load, arrivals, parse_numbers, sweep_rates


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def ks_exponential(sample: list[float], mean: float) -> bool:
    """Kolmogorov-Smirnov: does the sample fit an exponential of this mean (at the 1 % level)?"""
    ordered, n = sorted(sample), len(sample)
    d = max(
        max((i + 1) / n - cdf, cdf - i / n) for i, cdf in enumerate(1 - math.exp(-x / mean) for x in ordered)
    )
    return d < 1.628 / math.sqrt(n)  # the asymptotic critical value for alpha = 0.01


def test_poisson_arrivals_have_the_requested_mean_rate_and_exponential_gaps() -> None:
    times = arrivals(10.0, seed=7, count=5000)
    g = gaps(times)
    # Mean gap 1/rate within 3 standard errors (sd of an exponential = its mean).
    assert statistics.fmean(g) == pytest.approx(0.1, abs=3 * 0.1 / math.sqrt(len(g)))
    assert statistics.stdev(g) / statistics.fmean(g) == pytest.approx(1.0, abs=0.05)
    assert ks_exponential(g, 0.1)
    # Negative controls: the same test rejects the wrong mean, and evenly spaced arrivals.
    assert not ks_exponential(g, 0.12)
    assert not ks_exponential(gaps(arrivals(10.0, seed=7, count=5000, burstiness=math.inf)), 0.1)


def test_burstiness_below_one_spreads_the_gaps_at_the_same_rate() -> None:
    g = gaps(arrivals(10.0, seed=3, count=5000, burstiness=0.25))
    assert statistics.fmean(g) == pytest.approx(0.1, rel=0.08)
    assert statistics.stdev(g) / statistics.fmean(g) == pytest.approx(2.0, rel=0.1)  # 1/sqrt(shape)


def test_infinite_burstiness_is_a_constant_rate() -> None:
    assert arrivals(4.0, seed=0, count=4, burstiness=math.inf) == [0.0, 0.25, 0.5, 0.75]


def test_a_duration_bounds_the_schedule_and_the_count_follows_the_rate() -> None:
    times = arrivals(20.0, seed=1, duration=30.0)
    assert times[0] == 0.0 and max(times) < 30.0
    assert len(times) == pytest.approx(600, abs=3 * math.sqrt(600))


def test_the_same_seed_gives_the_same_schedule() -> None:
    assert arrivals(3.0, seed=5, count=50) == arrivals(3.0, seed=5, count=50)
    assert arrivals(3.0, seed=5, count=50) != arrivals(3.0, seed=6, count=50)


def test_sweep_rates_run_from_above_synchronous_up_to_throughput() -> None:
    assert sweep_rates(1.0, 5.0, 4) == [2.0, 3.0, 4.0, 5.0]
    assert sweep_rates(2.0, 1.0, 2) == [2.0, 2.0]  # a server slower in bulk: never below synchronous


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        arrivals(0.0, seed=0, count=3)
    with pytest.raises(ValueError):
        arrivals(1.0, seed=0)
    with pytest.raises(ValueError):
        parse_numbers("1,-2")
    assert parse_numbers("0.5, 1,2") == [0.5, 1.0, 2.0]


def test_loads_are_named_for_reports() -> None:
    assert Load("rate", 0.5).name == "0.5 req/s" and Load("concurrency", 4).name == "4 concurrent"
    assert Load("concurrency", 1, "synchronous").name == "synchronous"
