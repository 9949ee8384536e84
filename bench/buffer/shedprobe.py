"""A share of a load cell's arrivals sent from a process of its own, to time shed answers honestly.

The load generator's event loop also reads every admitted stream; when it is busy, an answer that has
arrived waits for the loop before its time is taken, so its shed latencies include the generator's own
lag. This process sends a thin Poisson share of the cell's arrivals (the rest come from the generator,
so the total rate is the cell's) and does nothing else: its loop is idle when an answer arrives. Admitted
requests are read to their end like any other. It prints one JSON line per request, and its own loop's
lag (how late a 5 ms timer fires, p99) at the end.

``python -m bench.buffer.shedprobe --url URL --rate R --seconds S --seed N``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
import uvloop

from bench.buffer.probe import Shot, open_loop
from bench.buffer.scenarios import bodies
from bench.load.stats import percentile

TICK = 0.005


async def lag(stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(TICK)
        samples.append(time.perf_counter() - t0 - TICK)


async def run(url: str, rate: float, seconds: float, seed: int) -> None:
    stop, lags = asyncio.Event(), list[float]()
    ticker = asyncio.create_task(lag(stop, lags))
    shots: list[Shot] = await open_loop([url], rate, seconds, bodies(seed=seed + 100), seed=seed)
    stop.set()
    await ticker
    for shot in shots:
        sys.stdout.write(orjson.dumps({"status": shot.status, "code": shot.code, "e2e": shot.e2e}).decode())
        sys.stdout.write("\n")
    sys.stdout.write(orjson.dumps({"lag_p99": percentile(lags, 99)}).decode() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer.shedprobe", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    uvloop.run(run(args.url, args.rate, args.seconds, args.seed))


if __name__ == "__main__":
    main()
