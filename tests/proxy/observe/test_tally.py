"""Metric cells: a scrape after a flush shows exactly what direct updates of the series would have shown,
and in multiprocess mode every update reaches the worker's file at once."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.mmap_dict import MmapedDict

from proxy.observe.tally import Tally

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def declare() -> tuple[CollectorRegistry, Counter, Gauge, Histogram, Histogram]:
    # As Fluido's series do: the *_created time stamps would differ between the two registries.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    counter = Counter("c", "A counter.", ["a"], registry=registry)
    gauge = Gauge("g", "A gauge.", ["a"], registry=registry)
    labelled = Histogram("h", "A histogram.", ["a"], buckets=BUCKETS, registry=registry)
    plain = Histogram("p", "An unlabelled histogram.", buckets=BUCKETS, registry=registry)
    return registry, counter, gauge, labelled, plain


def observation(rng: random.Random) -> float:
    """Durations as they come, and the edge cases: exactly on a bound, zero, huge, infinite."""
    return rng.choice([rng.random() * 3, rng.expovariate(20), rng.choice(BUCKETS), 0.0, 1e9, math.inf])


def test_a_scrape_after_a_flush_equals_direct_updates() -> None:
    rng = random.Random(7)
    direct, d_counter, d_gauge, d_labelled, d_plain = declare()
    tallied, t_counter, t_gauge, t_labelled, t_plain = declare()
    tally = Tally()
    cells: dict[tuple[str, str], Any] = {}

    def cell(kind: str, label: str) -> Any:
        if (kind, label) not in cells:  # made when first used, as a labelled child is
            metric = {"c": t_counter, "g": t_gauge, "h": t_labelled}[kind]
            cells[kind, label] = getattr(tally, {"c": "counter", "g": "gauge", "h": "histogram"}[kind])(
                metric.labels(label)
            )
        return cells[kind, label]

    plain_cell = tally.histogram(t_plain)
    scrapes = 0
    for step in range(5000):
        label = rng.choice("xyz")
        action = rng.randrange(6)
        if action == 0:
            amount = rng.choice([1, rng.randrange(100), rng.random() * 10])
            d_counter.labels(label).inc(amount)
            cell("c", label).inc(amount)
        elif action == 1:
            amount = rng.random() * 4 - 2
            d_gauge.labels(label).inc(amount)
            cell("g", label).inc(amount)
        elif action == 2:
            d_gauge.labels(label).dec()
            cell("g", label).dec()
        elif action == 3:
            value = rng.randrange(10)
            d_gauge.labels(label).set(value)
            cell("g", label).set(value)
        elif action == 4:
            amount = observation(rng)
            d_labelled.labels(label).observe(amount)
            cell("h", label).observe(amount)
        else:
            amount = observation(rng)
            d_plain.observe(amount)
            plain_cell.observe(amount)
        if step % 97 == 0 or step == 4999:
            tally.flush()
            scrapes += 1
            assert generate_latest(tallied) == generate_latest(direct), f"at step {step}"
    assert scrapes > 50
    # The comparison can fail: an update the cells miss shows.
    d_counter.labels("x").inc()
    tally.flush()
    assert generate_latest(tallied) != generate_latest(direct)


def test_nan_goes_to_the_sum_and_to_no_bucket_as_prometheus_client_does() -> None:
    direct, *_, d_plain = declare()
    tallied, *_, t_plain = declare()
    tally = Tally()
    cell = tally.histogram(t_plain)
    for amount in (0.2, math.nan, 3.0):
        d_plain.observe(amount)
        cell.observe(amount)
    tally.flush()
    assert generate_latest(tallied) == generate_latest(direct)
    assert b"p_count 2.0" in generate_latest(tallied)


def test_a_counter_cell_refuses_a_negative_amount_like_a_counter() -> None:
    _, counter, *_ = declare()
    cell = Tally().counter(counter.labels("x"))
    with pytest.raises(ValueError):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError):
        cell.inc(-1)


def test_a_cell_starts_from_the_value_its_series_already_has() -> None:
    _, counter, *_ = declare()
    counter.labels("x").inc(5)
    tally = Tally()
    cell = tally.counter(counter.labels("x"))
    cell.inc(2)
    tally.flush()
    assert counter.labels("x")._value.get() == 7


def test_cells_nothing_flushed_leave_the_series_as_they_were() -> None:
    _, counter, *_ = declare()
    tally = Tally()
    tally.counter(counter.labels("x")).inc(3)
    assert counter.labels("x")._value.get() == 0, "not before a flush"
    tally.flush()
    assert counter.labels("x")._value.get() == 3


def test_in_multiprocess_mode_every_update_reaches_the_file_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
    monkeypatch.setattr(values, "ValueClass", value_class)
    registry = CollectorRegistry()
    counter = Counter("mc", "A counter.", ["a"], registry=registry)
    histogram = Histogram("mh", "A histogram.", buckets=BUCKETS, registry=registry)
    gauge = Gauge("mg", "A gauge.", registry=registry, multiprocess_mode="livesum")
    tally = Tally()
    tally.counter(counter.labels("x")).inc(2)
    tally.histogram(histogram).observe(0.03)
    in_flight = tally.gauge(gauge)
    in_flight.inc()
    in_flight.inc()
    in_flight.dec()
    # No flush: read straight from the files this process writes, as another worker's scrape would.
    written = {
        (name, tuple(sorted(labels.items()))): value
        for path in tmp_path.glob("*_4242.db")
        for name, labels, value, *_ in _read(path)
    }
    assert written[("mc_total", (("a", "x"),))] == 2
    assert written[("mh_sum", ())] == 0.03
    assert written[("mh_bucket", (("le", "0.05"),))] == 1
    assert written[("mg", ())] == 1
    value_class.close_all_files()


def _read(path: Path) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        _, sample, labels, *_ = orjson.loads(key)
        out.append((sample, labels, value))
    return out
