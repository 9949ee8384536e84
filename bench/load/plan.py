"""The order of a run's cells: each model, each load level, every endpoint at that level in turn.

Endpoints are interleaved level by level, in ABBA order (A B at one level, B A at the next), so that a
drift of the machine during the run (another process waking up, a thermal limit) falls on both sides
alike instead of on whichever ran last. A sweep first measures each endpoint's synchronous and
throughput rates, then runs the rates between them, computed from the baseline endpoint so that every
endpoint gets the same rates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from .runner import Cell, Endpoint
from .schedule import SYNCHRONOUS, THROUGHPUT, Load, sweep_rates
from .stats import summarize

RunCell = Callable[[Endpoint, str, Load], Awaitable[Cell]]


def abba(endpoints: Sequence[Endpoint], level: int) -> list[Endpoint]:
    return list(endpoints) if level % 2 == 0 else list(reversed(endpoints))


async def run_levels(run: RunCell, endpoints: Sequence[Endpoint], model: str, loads: Sequence[Load],
                     pause: float, first_level: int = 0) -> list[Cell]:  # fmt: skip
    cells: list[Cell] = []
    for level, load in enumerate(loads, first_level):
        for endpoint in abba(endpoints, level):
            if cells and pause > 0:
                await asyncio.sleep(pause)  # let the server finish what the last cell left behind
            cells.append(await run(endpoint, model, load))
    return cells


async def run_sweep(run: RunCell, endpoints: Sequence[Endpoint], model: str, steps: int,
                    concurrency: int, pause: float) -> list[Cell]:  # fmt: skip
    """GuideLLM's sweep: synchronous, then throughput, then ``steps`` Poisson rates between the two."""
    probes = [Load("concurrency", 1, SYNCHRONOUS), Load("concurrency", concurrency, THROUGHPUT)]
    cells = await run_levels(run, endpoints, model, probes, pause)
    base = endpoints[0].name
    sync = next(summarize(c) for c in cells if c.endpoint == base and c.load.label == SYNCHRONOUS)
    thru = next(summarize(c) for c in cells if c.endpoint == base and c.load.label == THROUGHPUT)
    if sync.completed_rps <= 0 and thru.completed_rps <= 0:
        raise RuntimeError(f"{base} completed no request in the sweep's probes: nothing to sweep")
    rates = sweep_rates(sync.completed_rps, thru.completed_rps, steps)
    loads = [Load("rate", r) for r in rates]
    return cells + await run_levels(run, endpoints, model, loads, pause, first_level=len(probes))
