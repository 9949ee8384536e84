"""The embedded llama.cpp server: launched only when needed, health-checked, restarted, stopped."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from proxy.config import parse
from proxy.config_upstreams import EmbeddedConfig
from proxy.errors import UpstreamUnavailable
from proxy.upstream.embedded import EmbeddedServer, bundled_model_path
from tests.conftest import free_port, running
from tests.fakes.ollama import FakeOllama
from tests.support.wait import wait_until

HI = [{"role": "user", "content": "hi"}]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def default_like(ollama_url: str, port: int) -> dict[str, object]:
    """The shape of the shipped config: Ollama first, the embedded model second."""
    return {
        "upstreams": {
            "ollama": {"kind": "ollama", "url": ollama_url},
            "local": {"kind": "openai", "url": f"http://127.0.0.1:{port}/v1", "embedded": {"n_ctx": 512}},
        },
        "models": {
            "default": {
                "targets": [
                    {"upstream": "ollama", "model": "llama3.2:1b", "keep_alive": -1},
                    {"upstream": "local", "model": "smollm2"},
                ]
            }
        },
    }


def server(port: int, **cfg: object) -> EmbeddedServer:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/v1/models") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    return EmbeddedServer("local", f"http://127.0.0.1:{port}/v1", EmbeddedConfig(**cfg), probe)  # type: ignore[arg-type]


def test_the_bundled_model_file_is_found_without_importing_its_package() -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def children_serving(port: int) -> list[int]:
    """Processes of ours running llama.cpp's server on ``port``, found by their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not a process directory
            continue
        if b"llama_cpp.server" in argv and str(port).encode() in argv:
            found.append(int(proc.name))
    return found


def log_events(sink: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in sink.getvalue().splitlines()]


def test_with_ollama_serving_the_child_is_never_started(ollama: FakeOllama) -> None:
    port = free_port()
    sink = io.BytesIO()
    with running(parse(default_like(ollama.url, port)), log_sink=sink) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "default", "messages": HI})
        assert r.headers["x-fluido-upstream"] == "ollama"
        (finished,) = wait_until(
            lambda: [e for e in log_events(sink) if e["event"] == "warmup_finished"], "the start-up work"
        )
        assert finished["embedded_running"] == [], "start-up found Ollama serving and launched nothing"
        assert not [e for e in log_events(sink) if e["event"].startswith("embedded_")], "never even tried"
        assert children_serving(port) == [] and not listening(port)
    preloads = [body for body in ollama.requests if "messages" not in body]
    assert preloads == [{"model": "llama3.2:1b", "keep_alive": -1}], "the model was preloaded at start-up"


def test_with_ollama_down_the_child_starts_in_the_background_at_startup() -> None:
    """Also the positive control of the test above: its checks see a child when there is one."""
    port = free_port()
    sink = io.BytesIO()
    with running(parse(default_like(f"http://127.0.0.1:{free_port()}", port)), log_sink=sink):
        (finished,) = wait_until(
            lambda: [e for e in log_events(sink) if e["event"] == "warmup_finished"], "the start-up work", 60
        )
        assert finished["embedded_running"] == ["local"]
        assert listening(port), "launched without any request"
        assert len(children_serving(port)) == 1
    assert not listening(port), "stopped with Fluido"
    assert children_serving(port) == []


async def test_a_child_that_dies_is_started_again() -> None:
    port = free_port()
    child = server(port, n_ctx=512)
    try:
        await child.ensure_running()
        first = child._proc
        assert first is not None and child.running
        first.kill()
        await first.wait()
        assert not child.running
        await child.ensure_running()
        assert child._proc is not None and child._proc.pid != first.pid and listening(port)
    finally:
        await child.stop()
    assert not listening(port)


async def test_a_child_that_cannot_start_is_unavailable_with_its_log_named(tmp_path: Path) -> None:
    bogus = tmp_path / "missing.gguf"
    child = server(free_port(), model_path=str(bogus), startup_timeout=30)
    with pytest.raises(UpstreamUnavailable) as info:
        await child.ensure_running()
    assert str(child.log_path) in info.value.message
