"""Search latency through HTTP, for ``python -m bench.rag``: ``fluido serve`` on the benchmark's store.

One client, one request at a time, keep-alive: POST /v1/vector_stores/{id}/search with max_num_results 10
for train claims the server has not seen (so no query embedding is cached), after a warm-up on others.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.procs import REPO, free_port
from middleware.rag.config import RagConfig

WARMUP = 30
MEASURED = 400


def config_text(cfg: RagConfig) -> str:
    return (
        '[upstreams.none]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\n'
        '[models.default]\ntargets = [{ upstream = "none", model = "none" }]\n'
        "[log]\naccess_log = false\n[classifier]\nenabled = false\n[cache]\nenabled = false\n"
        f'[rag]\nenabled = true\npath = "{cfg.path}"\nrrf_k = {cfg.rrf_k}\n'
        f"dense_weight = {cfg.dense_weight}\nbm25_weight = {cfg.bm25_weight}\ncandidates = {cfg.candidates}\n"
    )


def latency(cfg: RagConfig, store: str, data: Path) -> None:
    claims = [
        orjson.loads(line)["text"]
        for line in (data / "queries_train.jsonl").read_bytes().splitlines()
        if line
    ]
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
            samples = []
            for claim in claims[WARMUP : WARMUP + MEASURED]:
                started = time.perf_counter()
                client.post(url, json={"query": claim, "max_num_results": 10}).raise_for_status()
                samples.append(time.perf_counter() - started)
        q = statistics.quantiles(samples, n=100)
        print(f"\nSearch through HTTP ({len(samples)} claims, one at a time, max_num_results 10, fused):")
        mean = statistics.fmean(samples) * 1000
        print(f"  p50 {q[49] * 1000:.1f} ms   p99 {q[98] * 1000:.1f} ms   mean {mean:.1f} ms")
        print(f"  (load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        Path(f.name).unlink(missing_ok=True)
