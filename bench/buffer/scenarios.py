"""The benchmark's scenarios, each a few seconds against fresh processes: a capacity fake and Fluido."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.buffer.probe import Shot, closed_loop, fake_stats, open_loop, scrape
from bench.load.prompts import builtin_classes
from bench.load.stats import percentile
from bench.procs import Fleet, run_queue
from middleware.classify.config import ClassifierConfig
from middleware.classify.scorer import RuleScorer

SLOTS = 4
ITL_MS, PREFILL_MS, PREFILL_MS_PER_WORD = 10.0, 20.0, 0.2
TOKENS = {"short": 24, "long": 100}
MIX = {"short": 0.7, "long": 0.3}


def prompts() -> dict[str, list[str]]:
    """The load generator's short and long prompts that Fluido's classifier puts in the same class."""
    scorer = RuleScorer(ClassifierConfig())
    classes = builtin_classes()
    return {c: [p for p in classes[c].prompts if scorer.pick(p) == c] for c in MIX}


def bodies(count: int = 4000, seed: int = 3, tokens: dict[str, int] | None = None) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    texts = prompts()
    tokens = tokens or TOKENS
    out = []
    for _ in range(count):
        cls = "short" if rng.random() < MIX["short"] else "long"
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": rng.choice(texts[cls])}],
            "max_tokens": tokens[cls],
            "stream": True,
        }
        out.append((cls, orjson.dumps(body)))
    return out


def service_seconds(cls: str) -> float:
    """What one request of the class holds a slot for on the fake: prefill, then its tokens."""
    words = sum(len(t.split()) for t in prompts()[cls]) / len(prompts()[cls])
    return (PREFILL_MS + PREFILL_MS_PER_WORD * words + ITL_MS * (TOKENS[cls] - 1)) / 1000


def capacity_rps() -> float:
    return SLOTS / sum(share * service_seconds(cls) for cls, share in MIX.items())


def fake_args(mode: str = "llamacpp", slots: int = SLOTS, itl_ms: float = ITL_MS) -> list[str]:
    return ["--mode", mode, "--slots", str(slots), "--itl-ms", str(itl_ms), "--prefill-ms", str(PREFILL_MS),
            "--prefill-ms-per-token", str(PREFILL_MS_PER_WORD), "--model", "capacity-model"]  # fmt: skip


def fluido_config(fake_url: str, mode: str, buffer: dict[str, Any], **sections: Any) -> dict[str, Any]:
    kind, url = ("ollama", fake_url) if mode == "ollama" else ("openai", fake_url + "/v1")
    return {
        "upstreams": {"fake": {"kind": kind, "url": url, "breaker_failures": 1000}},
        "models": {"chat": {"targets": [{"upstream": "fake", "model": "capacity-model"}]}},
        "cache": {"enabled": False},
        "log": {"access_log": False},
        "buffer": buffer,
        **sections,
    }


@dataclass
class Rig:
    fake: str
    fluidos: list[str]
    pids: list[int] = field(default_factory=list)  # the Fluido processes'


def cores() -> tuple[int | None, set[int]]:
    """Fluido's core and the rest's. The fake and the load generator stand for other machines: sharing
    Fluido's core, each wakes it late (a token relayed by the fake wakes Fluido, then the generator, often
    on one core), and a shed answer's time is then theirs more than Fluido's. With one core, none."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[-1], set(allowed[:-1])) if len(allowed) > 1 else (None, set(allowed))


@contextmanager
def rig(
    buffer: dict[str, Any], mode: str = "llamacpp", replicas: int = 1, fake: list[str] | None = None,
    **sections: Any,
) -> Iterator[Rig]:  # fmt: skip
    own, rest = cores()
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, rest)  # the load generator, and the probe process it starts
    try:
        with Fleet() as fleet:
            upstream = fleet.start("fake", "tests.fakes.capacity", fake or fake_args(mode), cpu=None)
            os.sched_setaffinity(upstream.pid, rest)
            fleet.wait_listening(upstream)
            fake_url = f"http://127.0.0.1:{upstream.port}"
            cfg = orjson.dumps(fluido_config(fake_url, mode, buffer, **sections)).decode()
            fluidos, pids = [], []
            for n in range(replicas):
                child = fleet.start(f"fluido{n}", "bench.buffer.server", ["--config", cfg], cpu=own)
                fleet.wait_listening(child)
                fluidos.append(f"http://127.0.0.1:{child.port}")
                pids.append(child.pid)
            yield Rig(fake_url, fluidos, pids)
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Cell:
    shots: list[Shot]
    slot_use: float  # share of slot time busy during the arrival window
    seconds: float
    lag_p99: float | None = None  # the load generator's own event-loop lag (a 5 ms timer's lateness), p99
    probe: list[dict[str, Any]] = field(default_factory=list)  # the probe process's requests, when asked
    probe_lag_p99: float | None = None  # the probe process's own loop lag, p99
    # The first Fluido process's on-CPU and run-queue seconds (ready to run, waiting for its core) per
    # second of the cell, and its time slices: a shed answer's server-side time has both in it.
    fluido_cpu: float = 0.0
    fluido_wait: float = 0.0
    fluido_runs: int = 0


async def _lag(stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - t0 - 0.005)


async def no_shots() -> list[Shot]:
    """The load generator's shots when the probe sends every arrival."""
    return []


async def load_cell(
    r: Rig, rate: float, seconds: float, load: list[tuple[str, bytes]], probe_share: float = 0.0
) -> Cell:
    """An open-loop cell. With ``probe_share``, that share of the arrivals comes from a process of its own
    (``bench.buffer.shedprobe``), to time shed answers without the load generator's lag (with a share of
    1, every arrival and no load generator); the total rate is the same."""
    before = await fake_stats(r.fake)
    sched = run_queue(r.pids[0]) if r.pids else (0.0, 0.0, 0)
    t0 = time.monotonic()
    probe = asyncio.create_task(probe_run(r.fluidos[0], rate * probe_share, seconds)) if probe_share else None
    stop, lags = asyncio.Event(), list[float]()
    ticker = asyncio.create_task(_lag(stop, lags))
    rest = rate * (1 - probe_share)
    run = asyncio.create_task(open_loop(r.fluidos, rest, seconds, load) if rest > 0 else no_shots())
    await asyncio.sleep(seconds)
    during = await fake_stats(r.fake)
    wall = time.monotonic() - t0
    shots = await run
    stop.set()
    await ticker
    busy = during["busy_seconds"] - before["busy_seconds"]
    cell = Cell(shots, busy / (SLOTS * wall), seconds, percentile(lags, 99))
    if r.pids:
        ran, waited, runs = (a - b for a, b in zip(run_queue(r.pids[0]), sched, strict=True))
        cell.fluido_cpu, cell.fluido_wait, cell.fluido_runs = ran / wall, waited / wall, int(runs)
    if probe is not None:
        cell.probe, cell.probe_lag_p99 = await probe
    return cell


async def probe_run(url: str, rate: float, seconds: float) -> tuple[list[dict[str, Any]], float | None]:
    """The shed probe process's requests at ``rate`` for ``seconds``, and its own loop lag p99."""
    args = ["--url", url, "--rate", str(rate), "--seconds", str(seconds)]
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.buffer.shedprobe", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await probe.communicate()
    *lines, last = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    return lines, last["lag_p99"]


async def limit_trace(r: Rig, workers: int, phases: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Saturating closed loop; per phase (fake slots, completions): (completions since the slots were
    set, L) samples taken every 20 ms."""
    traces: list[list[tuple[int, int]]] = []
    load = bodies(seed=11)
    for slots, completions in phases:
        await fake_stats(r.fake, {"slots": slots})
        trace: list[tuple[int, int]] = []
        traces.append(trace)
        done = [0]  # completions since the slots were set, shared with the sampler
        stop = asyncio.Event()

        async def sample(trace: list[tuple[int, int]] = trace, done: list[int] = done,
                         stop: asyncio.Event = stop) -> None:  # fmt: skip
            while not stop.is_set():
                metrics = await scrape(r.fluidos[0])
                trace.append((done[0], int(metrics.get('fluido_buffer_limit{upstream="fake"}', 0))))
                await asyncio.sleep(0.02)

        def count(shot: Shot, done: list[int] = done) -> None:
            done[0] += shot.status == 200

        sampler = asyncio.create_task(sample())
        await closed_loop(r.fluidos[0], workers, lambda _, n=completions, d=done: d[0] >= n, load, count)
        stop.set()
        await sampler
    return traces
