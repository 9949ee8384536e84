"""GET /ready: one cheap, cached check per upstream; ready when the main alias can be served."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx

from proxy.config import Config, parse
from tests.conftest import VLLM_MODEL, free_port, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until


def two_upstreams(ollama_url: str, vllm: FakeVLLM, **ready: Any) -> Config:
    return parse(
        {
            "ready": ready,
            "upstreams": {"ollama": {"kind": "ollama", "url": ollama_url}, "vllm": upstream_for(vllm)},
            "models": {
                "chat": {
                    "targets": [
                        {"upstream": "ollama", "model": "llama3.2:1b"},
                        {"upstream": "vllm", "model": VLLM_MODEL},
                    ]
                },
                "ollama-only": {"targets": [{"upstream": "ollama", "model": "llama3.2:1b"}]},
            },
        }
    )


def test_ready_when_every_upstream_answers(ollama: FakeOllama, vllm: FakeVLLM) -> None:
    with running(two_upstreams(ollama.url, vllm)) as url:
        r = httpx.get(f"{url}/ready")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ready" and body["model"] == "chat"
    assert all(c["ok"] and c["latency_ms"] >= 0 and c["circuit"] == "closed" for c in body["checks"].values())


def test_ready_while_one_target_of_the_alias_can_serve(vllm: FakeVLLM) -> None:
    with running(two_upstreams(f"http://127.0.0.1:{free_port()}", vllm)) as url:
        r = httpx.get(f"{url}/ready")
    checks = r.json()["checks"]
    assert r.status_code == 200
    assert not checks["ollama"]["ok"] and "unreachable" in checks["ollama"]["error"] and checks["vllm"]["ok"]


def test_unavailable_with_the_failing_checks_when_no_target_can_serve(vllm: FakeVLLM) -> None:
    with running(two_upstreams(f"http://127.0.0.1:{free_port()}", vllm, model="ollama-only")) as url:
        r = httpx.get(f"{url}/ready")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert r.json()["checks"]["ollama"]["ok"] is False


def test_results_are_cached_for_the_configured_seconds(ollama: FakeOllama, vllm: FakeVLLM) -> None:
    with running(two_upstreams(ollama.url, vllm, model="ollama-only", cache_seconds=60)) as url:
        assert httpx.get(f"{url}/ready").status_code == 200
        probes = ollama.hits.count("GET /api/version")
        assert probes >= 1
        assert httpx.get(f"{url}/ready").status_code == 200
        assert ollama.hits.count("GET /api/version") == probes, "the second answer probed nothing"
        ollama.stop_thread()
        assert httpx.get(f"{url}/ready").status_code == 200, "served from the cache"


def test_cached_results_expire_after_the_configured_seconds(ollama: FakeOllama, vllm: FakeVLLM) -> None:
    ttl = 0.5
    with running(two_upstreams(ollama.url, vllm, model="ollama-only", cache_seconds=ttl)) as url:
        checked = time.monotonic()  # before the check, so never later than the cache's own clock
        assert httpx.get(f"{url}/ready").status_code == 200
        ollama.stop_thread()
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 503, "the cached result to expire")
        assert time.monotonic() - checked >= ttl


def test_an_embedded_model_not_started_yet_is_ready_on_standby(ollama: FakeOllama) -> None:
    cfg = parse(
        {
            "upstreams": {
                "ollama": {"kind": "ollama", "url": ollama.url},
                "local": {"kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1", "embedded": {}},
            },
            "models": {
                "default": {
                    "targets": [
                        {"upstream": "ollama", "model": "llama3.2:1b"},
                        {"upstream": "local", "model": "smollm2"},
                    ]
                }
            },
        }
    )
    sink = io.BytesIO()
    with running(cfg, log_sink=sink) as url:
        # Start-up found Ollama serving, so it left the embedded model on standby.
        wait_until(lambda: b'"warmup_finished"' in sink.getvalue(), "the start-up work to finish")
        ollama.stop_thread()
        r = httpx.get(f"{url}/ready")
    local = r.json()["checks"]["local"]
    assert r.status_code == 200, r.text
    assert local == {"ok": True, "circuit": "closed", "standby": True}
