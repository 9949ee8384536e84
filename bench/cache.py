"""The response cache: what a hit costs, and how the semantic cache does on paraphrases.
``python -m bench.cache``.

1. Exact hits through Fluido on a real socket, with the cache in memory and in Redis, next to the same
   request going to the zero-delay upstream (a cache bypass): p50/p99 latency at concurrency 1.
2. The semantic look-up (embed + Chroma search + guards) on tests/data/paraphrases.jsonl: its cost, the
   hit ratio on paraphrases that should hit, and false hits on near-misses that must not.
Prints figures; never fails on a time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

from bench.fluido_server import ALIAS
from bench.limits import start_redis
from bench.loadgen import connect, run_load
from bench.procs import Fleet

PARAPHRASES = Path(__file__).resolve().parents[1] / "tests" / "data" / "paraphrases.jsonl"
REQUESTS = 3000


def request(temperature: float) -> bytes:
    body = orjson.dumps(
        {"model": ALIAS, "messages": [{"role": "user", "content": "What is the boiling point of water?"}],
         "max_tokens": 64, "temperature": temperature}
    )  # fmt: skip
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def quantiles_ms(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1000, q[98] * 1000


async def measure(port: int, raw: bytes) -> tuple[float, float]:
    conns = await connect(port, 1)
    try:
        await run_load(port, conns, raw, False, 200, 30)
        samples = await run_load(port, conns, raw, False, REQUESTS, 60)
    finally:
        for conn in conns:
            conn.close()
    return quantiles_ms(samples.latency)


def exact_hits() -> None:
    redis_proc, redis_url = start_redis()
    try:
        with Fleet() as fleet:
            upstream = fleet.start("upstream", "bench.upstream", [], None)
            fleet.wait_listening(upstream)
            base = f"http://127.0.0.1:{upstream.port}/v1"
            memory = fleet.start("memory", "bench.fluido_server", ["--upstream", base], None)
            shared = fleet.start(
                "redis", "bench.fluido_server", ["--upstream", base, "--cache-redis", redis_url], None
            )
            for child in (memory, shared):
                fleet.wait_listening(child)
            print(f"Exact cache, concurrency 1, {REQUESTS} requests each (ms)")
            print(f"  {'case':<34} {'p50':>7} {'p99':>7}")
            for label, port, temperature in (
                ("bypass (to the zero-delay upstream)", memory.port, 0.7),
                ("hit, memory", memory.port, 0.0),
                ("hit, Redis", shared.port, 0.0),
            ):
                p50, p99 = uvloop.run(measure(port, request(temperature)))
                print(f"  {label:<34} {p50:>7.3f} {p99:>7.3f}")
    finally:
        redis_proc.kill()
        redis_proc.wait()


def semantic() -> None:
    if not PARAPHRASES.exists():
        print("\nsemantic cache: tests/data/paraphrases.jsonl is missing")
        return
    from middleware.cache.semantic import SemanticIndex
    from proxy.services.embedder import Embedder

    pairs = [
        orjson.loads(line) for line in PARAPHRASES.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    threshold = 0.85

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            index = SemanticIndex(
                Embedder(cache_path=Path(tmp) / "embeddings.sqlite"), path=str(Path(tmp) / "chroma")
            )
            where = {"namespace": "bench"}
            for i, pair in enumerate(pairs):
                await index.add(f"k{i}", pair["cached"], {"namespace": "bench", "pair": str(i)})
            hits = false_hits = 0
            cold, warm = [], []
            for i, pair in enumerate(pairs):
                for samples in (cold, warm):  # the second look-up finds the query's embedding cached
                    started = time.perf_counter()
                    found = await index.search(pair["query"], {**where, "pair": str(i)}, threshold)
                    samples.append(time.perf_counter() - started)
                hits += bool(found) and pair["hit"]
                false_hits += bool(found) and not pair["hit"]
            should = sum(1 for p in pairs if p["hit"])
            print(f"\nSemantic cache on {len(pairs)} pairs (threshold {threshold}):")
            print(f"  hit ratio on paraphrases: {hits}/{should} = {hits / should:.0%}")
            print(f"  false hits on near-misses (must be 0): {false_hits}/{len(pairs) - should}")
            for label, samples in (("first look-up (embeds)", cold), ("repeat (embedding cached)", warm)):
                p50, p99 = quantiles_ms(samples)
                print(f"  look-up cost, {label:<26} p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            index.close()

    asyncio.run(run())


if __name__ == "__main__":
    exact_hits()
    semantic()
