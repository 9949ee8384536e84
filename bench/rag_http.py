"""Search latency through HTTP, for ``python -m bench.rag``: ``fluido serve`` on the benchmark's store.

POST /v1/vector_stores/{id}/search with max_num_results 10, keep-alive, for train claims the server has not
seen (so no query embedding is cached), after a warm-up on others:

- one client, one request at a time: the latency target's setting;
- then LOADED concurrent clients on other unseen claims: queueing included (the clients share the CPU);
- then claims already seen, one at a time: the query embedding comes from the cache.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from bench.procs import REPO, free_port
from middleware.rag.config import RagConfig

WARMUP = 30
MEASURED = 400  # one at a time
LOADED = 8  # concurrent clients for the loaded figure, on the claims left over (~380)
CACHED = 100


def config_text(cfg: RagConfig) -> str:
    return (
        '[upstreams.none]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\n'
        '[models.default]\ntargets = [{ upstream = "none", model = "none" }]\n'
        "[log]\naccess_log = false\n[classifier]\nenabled = false\n[cache]\nenabled = false\n"
        f'[rag]\nenabled = true\npath = "{cfg.path}"\nrrf_k = {cfg.rrf_k}\n'
        f"dense_weight = {cfg.dense_weight}\nbm25_weight = {cfg.bm25_weight}\ncandidates = {cfg.candidates}\n"
        f'embedding_precision = "{cfg.embedding_precision}"\n'
    )


def latency(cfg: RagConfig, store: str, data: Path) -> None:
    claims = [
        orjson.loads(line)["text"]
        for line in (data / "queries_train.jsonl").read_bytes().splitlines()
        if line
    ]
    # The quality part (and earlier runs) embedded these claims into the store's query-embedding cache on
    # disk: without clearing it, "new" claims would be read from SQLite, not embedded.
    for suffix in ("", "-wal", "-shm"):
        (Path(cfg.path) / f"query-embeddings.sqlite{suffix}").unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config_text(cfg))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    command = [sys.executable, "-m", "proxy.cli", "serve", "--config", f.name, "--port", str(port)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if client.get("/ready").json()["dependencies"]["rag_chroma"]["ok"]:
                        break
                except (httpx.TransportError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("\nHTTP latency: fluido serve did not become ready")
                    return
                time.sleep(0.5)
            stores = client.get("/v1/vector_stores", params={"limit": 100}).json()["data"]
            store_id = next(s["id"] for s in stores if s["name"] == store)
            url = f"/v1/vector_stores/{store_id}/search"
            for claim in claims[:WARMUP]:
                client.post(url, json={"query": claim, "max_num_results": 10}).raise_for_status()
            load = os.getloadavg()[0]
            alone = [timed(client, url, c) for c in claims[WARMUP : WARMUP + MEASURED]]
            report("new claims, one at a time (concurrency 1)", alone, load)
        load = os.getloadavg()[0]
        loaded = concurrently(base, url, claims[WARMUP + MEASURED :], LOADED)
        report(f"new claims, {LOADED} concurrent clients (loaded)", loaded, load)
        with httpx.Client(base_url=base, timeout=60) as client:
            load = os.getloadavg()[0]
            cached = [timed(client, url, c) for c in claims[WARMUP : WARMUP + CACHED]]
            report("claims seen before (cached query vector), one at a time", cached, load)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        Path(f.name).unlink(missing_ok=True)


def timed(client: httpx.Client, url: str, claim: str) -> float:
    started = time.perf_counter()
    client.post(url, json={"query": claim, "max_num_results": 10}).raise_for_status()
    return time.perf_counter() - started


def concurrently(base: str, url: str, claims: list[str], clients: int) -> list[float]:
    """Each client (a thread with its own connection) sends its share of ``claims`` back to back."""

    def one(share: list[str]) -> list[float]:
        with httpx.Client(base_url=base, timeout=60) as client:
            return [timed(client, url, c) for c in share]

    with ThreadPoolExecutor(clients) as pool:
        shares = pool.map(one, [claims[i::clients] for i in range(clients)])
        return [t for share in shares for t in share]


def report(label: str, samples: list[float], load_before: float) -> None:
    q = statistics.quantiles(samples, n=100)
    mean = statistics.fmean(samples) * 1000
    print(f"\nSearch through HTTP, {label}: {len(samples)} requests, max_num_results 10, fused")
    print(f"  p50 {q[49] * 1000:.1f} ms   p99 {q[98] * 1000:.1f} ms   mean {mean:.1f} ms")
    after = os.getloadavg()[0]
    print(f"  (load average {load_before:.1f} before, {after:.1f} after, on {os.cpu_count()} cores)")
