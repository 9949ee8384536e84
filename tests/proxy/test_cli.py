"""``fluido check-config`` and ``fluido serve`` as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from tests.conftest import VLLM_MODEL, free_port
from tests.fakes.vllm import FakeVLLM

REPO = Path(__file__).resolve().parents[2]


def test_check_config_summarises_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(REPO / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert "model    default: ollama:smollm2:135m -> local:smollm2" in out
    assert "(launched by Fluido)" in out


def test_check_config_lists_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nport = "eighty"\n[models.x]\ntargets = [{ upstream = "nowhere", model = "m" }]\n'
    )
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "server.port:" in err and "models.x.targets[0].upstream:" in err


def test_serve_runs_workers_that_answer_and_stop_on_sigterm(vllm: FakeVLLM, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[upstreams.vllm]\nkind = "openai"\nurl = "{vllm.url}/v1"\n'
        f'[models.chat]\ntargets = [{{ upstream = "vllm", model = "{VLLM_MODEL}" }}]\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "fluido serve did not come up"
            time.sleep(0.2)
        for _ in range(4):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                           json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert r.json()["choices"][0]["message"]["content"] == vllm.reply
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
