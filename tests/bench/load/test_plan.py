"""Cell order: endpoints interleaved ABBA; the sweep's probes and rates."""

from __future__ import annotations

from bench.load.client import OK, Record
from bench.load.plan import run_levels, run_sweep
from bench.load.runner import Cell, Endpoint
from bench.load.schedule import SYNCHRONOUS, THROUGHPUT, Load

A, B = Endpoint("a", "http://a/v1"), Endpoint("b", "http://b/v1")


class Recorder:
    """Stands in for the runner: notes the order and returns cells with ``rps`` completions per second."""

    def __init__(self, rps: dict[str, float]) -> None:
        self.rps = rps
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, endpoint: Endpoint, model: str, load: Load) -> Cell:
        self.calls.append((endpoint.name, load.name))
        rate = self.rps.get(load.label, load.value)
        records = tuple(
            Record("s", i / rate, 0, 200, OK, "", 0.1, 0.2, (), 1, 1, True) for i in range(int(rate * 10))
        )
        return Cell(endpoint.name, endpoint.base, model, load, 0.0, 10.0, 0.0, records)


async def test_endpoints_take_turns_abba_at_each_level() -> None:
    run = Recorder({})
    await run_levels(run, [A, B], "m", [Load("rate", 1), Load("rate", 2), Load("rate", 4)], pause=0)
    assert [e for e, _ in run.calls] == ["a", "b", "b", "a", "a", "b"]
    assert [lv for _, lv in run.calls][::2] == ["1 req/s", "2 req/s", "4 req/s"]


async def test_a_sweep_probes_then_runs_rates_between_synchronous_and_throughput() -> None:
    run = Recorder({SYNCHRONOUS: 1.0, THROUGHPUT: 4.0})
    cells = await run_sweep(run, [A, B], "m", steps=3, concurrency=16, pause=0)
    assert [c.load.name for c in cells if c.endpoint == "a"] == [
        SYNCHRONOUS,
        THROUGHPUT,
        "2 req/s",
        "3 req/s",
        "4 req/s",
    ]
    assert [c.load.name for c in cells if c.endpoint == "b"] == [
        c.load.name for c in cells if c.endpoint == "a"
    ]
    assert next(c.load for c in cells if c.load.label == THROUGHPUT).value == 16
