"""``fluido serve`` as a child process, for tests of the command itself and of several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import VLLM_MODEL, free_port

REPO = Path(__file__).resolve().parents[2]


def vllm_config(path: Path, vllm_url: str, extra: str = "") -> Path:
    path.write_text(
        f'[upstreams.vllm]\nkind = "openai"\nurl = "{vllm_url}/v1"\n'
        f'[models.chat]\ntargets = [{{ upstream = "vllm", model = "{VLLM_MODEL}" }}]\n{extra}'
    )
    return path


@contextmanager
def serving(config: Path, workers: int) -> Iterator[str]:
    """``fluido serve`` on a free port until the block ends (then SIGTERM, which must exit 0)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    command = ["serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *command], cwd=REPO, env=env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "fluido serve did not come up"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
