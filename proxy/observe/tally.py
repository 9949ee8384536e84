"""Metric updates kept as plain numbers, written into the Prometheus series in one pass before a scrape.

prometheus_client takes a lock for every update of every series, and one request makes about twenty. A
``Tally`` gives each series a cell that keeps its value as the series would (the same additions in the same
order, from the series' own starting value) with no lock, and ``flush`` sets the series to those values:
a scrape after a flush reads exactly what it would have read had every update gone to the series itself.

With several worker processes (``PROMETHEUS_MULTIPROC_DIR``), each worker's values live in a file that any
worker's scrape reads: there a cell writes through at once, as the series' own methods would.

Cells reach into prometheus_client's value holders (a counter's or gauge's ``_value``; a histogram's
``_sum``, ``_buckets`` and ``_upper_bounds``); tests/proxy/observe/test_tally.py checks that what a
scrape shows stays the same as with direct updates.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Protocol


class Holder(Protocol):
    """prometheus_client's value holder (``MutexValue``, or ``MmapedValue`` in multiprocess mode)."""

    def inc(self, amount: float) -> None: ...

    def set(self, value: float) -> None: ...

    def get(self) -> float: ...


def _shared(holder: Holder) -> bool:
    """Whether the holder writes to a file other processes read (multiprocess mode)."""
    return bool(getattr(holder, "_multiprocess", False))


_NEGATIVE = "Counters can only be incremented by non-negative amounts."  # prometheus_client's own rule


class CounterCell:
    """A counter's value; ``inc`` refuses negative amounts, as ``Counter.inc`` does."""

    __slots__ = ("_holder", "value")

    def __init__(self, holder: Holder) -> None:
        self._holder = holder
        self.value = holder.get()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(_NEGATIVE)
        self.value += amount

    def flush(self) -> None:
        self._holder.set(self.value)


class GaugeCell:
    """A gauge's value."""

    __slots__ = ("_holder", "value")

    def __init__(self, holder: Holder) -> None:
        self._holder = holder
        self.value = holder.get()

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value += -amount  # as Gauge.dec: an increment by the negated amount

    def set(self, value: float) -> None:
        self.value = value

    def flush(self) -> None:
        self._holder.set(self.value)


class HistogramCell:
    """A histogram's sum and per-bucket counts (prometheus_client adds the buckets up when it renders)."""

    __slots__ = ("_bounds", "_buckets", "_sum", "counts", "sum")

    def __init__(self, histogram: Any) -> None:
        self._bounds: list[float] = histogram._upper_bounds  # ends with +Inf
        self._sum: Holder = histogram._sum
        self._buckets: list[Holder] = histogram._buckets
        self.sum = self._sum.get()
        self.counts = [bucket.get() for bucket in self._buckets]

    def observe(self, amount: float) -> None:
        self.sum += amount
        i = bisect_left(self._bounds, amount)  # the first bound >= amount, as prometheus_client's loop finds
        if amount <= self._bounds[i]:  # false only for NaN, which no bucket counts there either
            self.counts[i] += 1

    def flush(self) -> None:
        self._sum.set(self.sum)
        for bucket, count in zip(self._buckets, self.counts, strict=True):
            bucket.set(count)


class _SharedCounter(CounterCell):
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(_NEGATIVE)
        self._holder.inc(amount)

    def flush(self) -> None:
        pass


class _SharedGauge(GaugeCell):
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        self._holder.inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._holder.inc(-amount)

    def set(self, value: float) -> None:
        self._holder.set(value)

    def flush(self) -> None:
        pass


class _SharedHistogram(HistogramCell):
    __slots__ = ()

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        i = bisect_left(self._bounds, amount)
        if amount <= self._bounds[i]:
            self._buckets[i].inc(1)

    def flush(self) -> None:
        pass


class Tally:
    """The cells of one registry's series; ``flush`` writes them all into their series."""

    def __init__(self) -> None:
        self._cells: list[CounterCell | GaugeCell | HistogramCell] = []

    def counter(self, child: Any) -> CounterCell:
        """The cell of a counter (a labelled child, or an unlabelled counter)."""
        holder = child._value
        cell = _SharedCounter(holder) if _shared(holder) else CounterCell(holder)
        self._cells.append(cell)
        return cell

    def gauge(self, child: Any) -> GaugeCell:
        holder = child._value
        cell = _SharedGauge(holder) if _shared(holder) else GaugeCell(holder)
        self._cells.append(cell)
        return cell

    def histogram(self, child: Any) -> HistogramCell:
        cell = _SharedHistogram(child) if _shared(child._sum) else HistogramCell(child)
        self._cells.append(cell)
        return cell

    def flush(self) -> None:
        for cell in self._cells:
            cell.flush()
