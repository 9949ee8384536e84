"""``python -m bench.buffer.cost``: the buffer's own CPU per request, in-process on uvloop.

A closed loop of ``--clients`` requests (16 by default) each taking a slot at an upstream's gate, holding it
for one event-loop turn (a zero-delay upstream) and giving it back, as the chain does around the router;
the same loop without the gate is the floor. Two limits: L far above the clients (nothing ever waits: the
cost of the bookkeeping alone), and the default start of an OpenAI-compatible upstream, L = 4, where 12 of
the 16 wait in the queue at every moment and each arrival is judged against the forecast. The holding
times are measured as the run goes, as in the chain. CPU time of the process, so the figure holds on a
shared machine; alternated runs, each figure the median.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from middleware.buffer.admission import Admission
from middleware.buffer.config import DEFAULT_RESERVE
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.queue import Gate
from proxy.errors import Overloaded

CLASSES = ("short", "short", "long", "short", "code", "short", "long", "short", "short", "long")
BUDGETS = {"short": 5.0, "code": 15.0, "long": 30.0}
SHED: list[int] = []  # refusals per run (a saturated closed loop may be refused: its demand is L)


async def loop_of(clients: int, count: int, admission: Admission | None) -> float:
    """CPU seconds per request for ``count`` requests over ``clients`` concurrent clients."""
    left = count
    shed = [0]

    async def client(n: int) -> None:
        nonlocal left
        i = n
        while left > 0:
            left -= 1
            cls = CLASSES[i % len(CLASSES)]
            i += 1
            if admission is None:
                await asyncio.sleep(0)
                continue
            try:
                entry = await admission.enter(cls, BUDGETS[cls])
            except Overloaded:
                shed[0] += 1
                continue
            try:
                await asyncio.sleep(0)  # the upstream answers at once
            finally:
                admission.leave(entry)

    c0 = time.process_time()
    await asyncio.gather(*(client(n) for n in range(clients)))
    SHED.append(shed[0])
    return (time.process_time() - c0) / count


def admission(limit: int) -> Admission:
    settings = ControllerSettings(initial=limit, maximum=max(limit, 64), adaptive=False)
    return Admission("up", Gate(Controller(settings), 64, DEFAULT_RESERVE))


async def measure(clients: int, count: int, rounds: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {"no buffer": [], "L = 64": [], "L = 4": []}
    for _ in range(rounds):
        runs["no buffer"].append(await loop_of(clients, count, None))
        for limit in (64, 4):
            gate = admission(limit)
            await loop_of(clients, count // 10, gate)  # holding times measured, rates known
            runs[f"L = {limit}"].append(await loop_of(clients, count, gate))
            await gate.close()
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer.cost", description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--count", type=int, default=20000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    got = uvloop.run(measure(args.clients, args.count, args.rounds))
    floor = got["no buffer"]
    print(f"buffer CPU per request, {args.clients} clients, zero-delay upstream (median of {args.rounds}):")
    for name, seconds in got.items():
        extra = "" if name == "no buffer" else f"  (+{(seconds - floor) * 1e6:.1f} us for the buffer)"
        print(f"  {name:<10}: {seconds * 1e6:6.1f} us{extra}")
    print(f"  refused per run (of {args.count}): {SHED}")


if __name__ == "__main__":
    main()
