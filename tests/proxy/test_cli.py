"""``fluido check-config`` and ``fluido serve`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from tests.fakes.vllm import FakeVLLM
from tests.support.serve import REPO, serving, vllm_config


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
    with serving(vllm_config(tmp_path / "config.toml", vllm.url), workers=2) as base:
        for _ in range(4):
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.json()["choices"][0]["message"]["content"] == vllm.reply
