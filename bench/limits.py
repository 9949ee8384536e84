"""What a rate-limit check adds to a request: ``acquire`` before the call plus ``settle`` after it, with the
memory backend and with a real Redis server on loopback. ``python -m bench.limits``.

Each request carries a key bucket and a key-on-model bucket with every limit set (the most work a check
does). Prints p50/p99 in microseconds; never fails on a time.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time

import uvloop

from middleware.limits import MemoryLimiter, RedisConfig, RedisLimiter
from proxy.limits import Bucket, Limiter, RateLimits

ROUNDS = {"memory": 20_000, "redis": 5_000}
BUCKETS = [
    Bucket("key:bench", "key:bench", RateLimits(rpm=10**9, tpm=10**12, concurrency=10**6)),
    Bucket("key:bench", "key:bench:model:default", RateLimits(rpm=10**9, tpm=10**12, concurrency=10**6)),
]


async def measure(limiter: Limiter, rounds: int) -> list[float]:
    for _ in range(500):  # warm-up: connections, script cache
        await limiter.settle(await limiter.acquire(BUCKETS, 600), 600, 400)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        grant = await limiter.acquire(BUCKETS, 600)
        await limiter.settle(grant, 600, 400)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


async def main() -> None:
    print(
        f"rate-limit check (acquire + settle, 2 buckets x rpm/tpm/concurrency), {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'backend':<8} {'checks':>7} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
    proc, url = start_redis()
    try:
        redis_limiter = RedisLimiter(RedisConfig(url=url), lease_seconds=900)
        for name, limiter in (("memory", MemoryLimiter(900)), ("redis", redis_limiter)):
            samples = await measure(limiter, ROUNDS[name])
            q = statistics.quantiles(samples, n=100)
            print(
                f"{name:<8} {len(samples):>7} {q[49]:>8.1f} {q[98]:>8.1f} {statistics.fmean(samples):>8.1f}"
            )
        await redis_limiter.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    uvloop.run(main())
