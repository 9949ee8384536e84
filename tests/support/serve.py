"""``fluido serve`` as a child process, for tests of the command itself and of several workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import VLLM_MODEL, free_port
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


def vllm_config(path: Path, vllm_url: str, extra: str = "") -> Path:
    path.write_text(
        f'[upstreams.vllm]\nkind = "openai"\nurl = "{vllm_url}/v1"\n'
        f'[models.chat]\ntargets = [{{ upstream = "vllm", model = "{VLLM_MODEL}" }}]\n{extra}'
    )
    return path


@contextmanager
def serving(config: Path, workers: int, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``fluido serve`` on a free port until the block ends, then SIGTERM, after which it must shut down
    cleanly: several workers' supervisor exits 0; one worker exits by that SIGTERM, which uvicorn re-raises
    once its graceful shutdown is done.

    ``env`` adds variables (API keys, a Prometheus multiprocess directory) to this process's environment."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | dict(env or {})
    command = ["serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *command], cwd=REPO, env=child_env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, "fluido serve exited"
        try:
            return httpx.get(f"{base}/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, "fluido serve to come up", 30)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == (0 if workers > 1 else -signal.SIGTERM)
