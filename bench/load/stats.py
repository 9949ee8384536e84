"""Figures of a cell: latency percentiles, throughput, shed and error counts, the generator's own lag."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .client import ERROR, OK, SHED, UNFINISHED
from .runner import Cell


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Figures of one cell. Latencies in seconds, over successful requests unless said otherwise."""

    endpoint: str
    model: str
    load: str
    offered_rps: float  # the open loop's rate; a closed loop's achieved send rate
    requests: int
    ok: int
    shed: int
    errors: int  # failed answers (the cut ones apart)
    unfinished: int  # still running when the cell ended: cut by the run, not failed by the server
    ttft_p50: float | None
    ttft_p90: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p99: float | None
    e2e_p50: float | None
    e2e_p99: float | None
    shed_latency_p50: float | None  # how fast the server said no
    shed_latency_p99: float | None
    shed_with_retry_after: int  # shed answers that said when to come back
    completed_rps: float
    output_tps: float  # output tokens per second, successful requests
    usage_share: float  # share of successful requests whose token count came from the server's usage
    by_status: dict[int, int]
    by_error: dict[str, int]
    lag_p99: float | None  # the generator's send lateness (open loop): large values mean it fell behind
    client_cpu_share: float  # generator CPU seconds per wall second


def summarize(cell: Cell) -> Summary:
    records = cell.records
    ok = [r for r in records if r.outcome == OK]
    shed = [r for r in records if r.outcome == SHED]
    errors = [r for r in records if r.outcome == ERROR and r.error != UNFINISHED]
    unfinished = [r for r in records if r.error == UNFINISHED]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    itl = [g for r in ok for g in r.itl]
    e2e = [r.e2e for r in ok]
    wall = cell.wall if cell.wall > 0 else float("nan")
    if cell.load.open_loop:
        offered = cell.load.value
    else:
        span = max((r.sent for r in records), default=0.0)
        offered = (len(records) - 1) / span if span > 0 and len(records) > 1 else len(records) / wall
    return Summary(
        endpoint=cell.endpoint,
        model=cell.model,
        load=cell.load.name,
        offered_rps=offered,
        requests=len(records),
        ok=len(ok),
        shed=len(shed),
        errors=len(errors),
        unfinished=len(unfinished),
        ttft_p50=percentile(ttft, 50),
        ttft_p90=percentile(ttft, 90),
        ttft_p99=percentile(ttft, 99),
        itl_p50=percentile(itl, 50),
        itl_p99=percentile(itl, 99),
        e2e_p50=percentile(e2e, 50),
        e2e_p99=percentile(e2e, 99),
        shed_latency_p50=percentile([r.e2e for r in shed], 50),
        shed_latency_p99=percentile([r.e2e for r in shed], 99),
        shed_with_retry_after=sum(r.retry_after is not None for r in shed),
        completed_rps=len(ok) / wall,
        output_tps=sum(r.output_tokens for r in ok) / wall,
        usage_share=sum(r.usage_reported for r in ok) / len(ok) if ok else 0.0,
        by_status=dict(sorted(Counter(r.status for r in records).items())),
        by_error=dict(Counter(r.error for r in records if r.error).most_common()),
        lag_p99=percentile([r.lag for r in records], 99) if cell.load.open_loop else None,
        client_cpu_share=cell.client_cpu / wall,
    )


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """One query class within a cell: short questions must not pay for long ones."""

    query_class: str
    ok: int
    shed: int
    errors: int  # the cut ones included
    ttft_p50: float | None
    ttft_p99: float | None
    e2e_p50: float | None


def by_class(cell: Cell) -> list[ClassFigures]:
    figures = []
    for name in sorted({r.query_class for r in cell.records}):
        mine = [r for r in cell.records if r.query_class == name]
        ok = [r for r in mine if r.outcome == OK]
        ttft = [r.ttft for r in ok if r.ttft is not None]
        figures.append(
            ClassFigures(
                query_class=name,
                ok=len(ok),
                shed=sum(r.outcome == SHED for r in mine),
                errors=sum(r.outcome == ERROR for r in mine),
                ttft_p50=percentile(ttft, 50),
                ttft_p99=percentile(ttft, 99),
                e2e_p50=percentile([r.e2e for r in ok], 50),
            )
        )
    return figures


def ratio(new: float | None, base: float | None) -> float | None:
    """new / base, or None when either is missing or the base is zero."""
    if new is None or base is None or base == 0:
        return None
    return new / base
