"""Client API keys are secrets: after a run of every kind of request made with known keys (served,
streamed, refused, rate-limited, failed upstream, admin), none of them appears in the log, the metrics,
any response, or anything the upstreams received."""

from __future__ import annotations

import io
import time

import httpx
import orjson

from proxy.config import parse
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

SECRETS = {
    "USER_KEY": "sk-user-Zq81bW3kYt0xR4",
    "LIMITED_KEY": "sk-limited-Hc55vN2pLm7e",
    "ADMIN_KEY": "sk-admin-Uo29sD6gFa1j",
}
WRONG = "sk-wrong-Pp73kX0dQz5n"  # never configured: must not be echoed either
HI = [{"role": "user", "content": "hi"}]


def test_no_client_key_leaks_into_logs_metrics_replies_or_upstream_requests(
    vllm: FakeVLLM, ollama: FakeOllama
) -> None:
    cfg = parse(
        {
            "keys": {
                "user": {"key_env": "USER_KEY"},
                "limited": {"key_env": "LIMITED_KEY", "rpm": 1},
                "root": {"key_env": "ADMIN_KEY", "admin": True},
            },
            "log": {"include_content": True, "level": "debug"},
            "upstreams": {"vllm": upstream_for(vllm), "ollama": upstream_for(ollama)},
            "models": {
                "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
                "local": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL}]},
            },
            "cache": {"enabled": True, "semantic": {"enabled": False}},
        },
        SECRETS,
    )
    sink = io.BytesIO()
    seen: list[bytes] = []  # every status line, header and body a client got back

    def keep(r: httpx.Response) -> httpx.Response:
        r.read()
        seen.append(f"{r.status_code} {r.headers}".encode() + r.content)
        return r

    keys = [*SECRETS.values(), WRONG]
    with running(cfg, log_sink=sink) as url, httpx.Client(base_url=url, timeout=10) as client:
        for key in keys:
            auth = {"authorization": f"Bearer {key}"}
            for model in ("chat", "local", "nope"):
                for stream in (False, True):
                    body = {"model": model, "messages": HI, "stream": stream, "temperature": 0}
                    keep(client.post("/v1/chat/completions", json=body, headers=auth))
            keep(client.post("/v1/embeddings", json={"model": "chat", "input": "hi"}, headers=auth))
            keep(client.get("/v1/models", headers=auth))
            for model in ("chat", "local"):  # Ollama's door
                keep(client.post("/api/chat", json={"model": model, "messages": HI}, headers=auth))
                keep(client.post("/api/generate", json={"model": model, "prompt": "hi"}, headers=auth))
            keep(client.get("/api/tags", headers=auth))
            keep(client.post("/admin/cache/purge", headers=auth))
            keep(client.post("/v1/chat/completions", content=b"{", headers=auth))  # a 400
            # The key where it does not belong: other headers, a lowercase scheme, the body itself.
            keep(
                client.post(
                    "/v1/chat/completions", json={"model": "chat", "messages": HI}, headers={"x-api-key": key}
                )
            )
            keep(
                client.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": HI},
                    headers={"authorization": f"bearer {key}"},
                )
            )
        # A marker in the prompt shows the grep reaches what the upstream got and what the log kept.
        marker = {"role": "user", "content": "marker-Jd83hs"}
        keep(
            client.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": [marker]},
                headers={"authorization": f"Bearer {keys[0]}"},
            )
        )
        vllm.fail_status = 500
        keep(
            client.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": HI},
                headers={"authorization": f"Bearer {keys[0]}"},
            )
        )
        keep(client.get("/metrics"))
        statuses = {int(s.split(b" ", 1)[0]) for s in seen}
    deadline = time.monotonic() + 5  # the access log is written by a thread: wait for the last record
    while sink.getvalue().count(b'"event":"request"') < len(seen) - 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    outputs = {
        "log": sink.getvalue(),
        "replies": b"\n".join(seen),
        "upstream requests": orjson.dumps([*vllm.requests, *ollama.requests]),
        "upstream headers": repr([*vllm.headers, *ollama.headers]).encode(),
    }
    # Positive controls: the run covered successes, refusals, limits and failures, and the outputs are full.
    assert {200, 400, 401, 403, 404, 429, 502} <= statuses, statuses
    assert b'"client":"user"' in outputs["log"] and vllm.requests and ollama.requests
    assert b"marker-Jd83hs" in outputs["log"] and b"marker-Jd83hs" in outputs["upstream requests"]
    for key in keys:
        for where, text in outputs.items():
            assert key.encode() not in text, f"{key} found in the {where}"
