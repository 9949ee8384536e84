"""API keys: Bearer keys checked against hashes; 401 in OpenAI's shape; the key never travels upstream."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from middleware.limits.auth import forwarded_client
from proxy.config import ConfigError, parse
from tests.conftest import VLLM_MODEL, model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

HI = [{"role": "user", "content": "hi"}]
ENV = {"TUTOR_KEY": "sk-tutor-123", "OPS_KEY": "sk-ops-456"}


def keyed(fake: FakeVLLM | FakeOllama, **extra: Any) -> Any:
    return parse(
        {
            "keys": {"tutor": {"key_env": "TUTOR_KEY"}, "ops": {"key_env": "OPS_KEY"}},
            "upstreams": {"up0": upstream_for(fake)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(fake)}]}},
            **extra,
        },
        ENV,
    )


@pytest.fixture
def url(vllm: FakeVLLM) -> Iterator[str]:
    with running(keyed(vllm)) as base:
        yield base


def test_a_valid_key_is_served(url: str, vllm: FakeVLLM) -> None:
    client = OpenAI(base_url=url + "/v1", api_key="sk-tutor-123", max_retries=0)
    assert client.chat.completions.create(model="chat", messages=HI).choices[0].message.content == vllm.reply


@pytest.mark.parametrize("key", ["sk-wrong", "sk-tutor-12", "sk-tutor-1234"])
def test_a_wrong_key_raises_authentication_error(url: str, key: str) -> None:
    client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="chat", messages=HI)
    assert info.value.code == "invalid_api_key"


def test_a_missing_key_is_a_401_with_a_bearer_challenge(url: str) -> None:
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "authentication_error"


def test_every_v1_route_needs_a_key_and_probes_do_not(url: str) -> None:
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.post(f"{url}/v1/embeddings", json={"model": "chat", "input": "x"}).status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer sk-ops-456"}).status_code == 200
    assert [httpx.get(f"{url}{p}").status_code for p in ("/health", "/ready", "/metrics")] == [200, 200, 200]


def test_the_upstream_never_sees_the_clients_key(upstream: FakeVLLM | FakeOllama) -> None:
    with running(keyed(upstream)) as url:
        for path, body in [
            ("/v1/chat/completions", {"model": "chat", "messages": HI}),
            ("/v1/chat/completions", {"model": "chat", "messages": HI, "stream": True}),
            ("/v1/embeddings", {"model": "chat", "input": "hi"}),
        ]:
            r = httpx.post(f"{url}{path}", json=body, headers={"authorization": "Bearer sk-ops-456"})
            assert r.status_code == 200, r.text
    served = [b for b in upstream.requests if b.get("messages") or b.get("input")]
    assert len(served) == 3, "every request reached the upstream"
    assert len(upstream.headers) == len(upstream.requests)
    assert all("sk-ops-456" not in str(h) for h in upstream.headers)
    assert all("sk-ops-456" not in str(b) for b in upstream.requests)


def test_the_access_record_names_the_key_never_its_value(vllm: FakeVLLM) -> None:
    sink = io.BytesIO()
    with running(keyed(vllm), log_sink=sink) as url:
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": HI},
            headers={"authorization": "Bearer sk-ops-456"},
        )
    assert b"sk-ops-456" not in sink.getvalue()
    record = next(orjson.loads(line) for line in sink.getvalue().splitlines() if b'"request"' in line)
    assert record["client"] == "ops"


def access_records(sink: io.BytesIO) -> list[dict[str, Any]]:
    return [r for r in map(orjson.loads, sink.getvalue().splitlines()) if r["event"] == "request"]


def test_rejected_and_wrong_keys_never_reach_the_log(vllm: FakeVLLM) -> None:
    sink = io.BytesIO()
    wrong = ["sk-wrong-789", "sk-ops-45", "sk-ops-4567", "Bearer-less-sk-ops-456"]
    with running(keyed(vllm), log_sink=sink) as url:
        for key in wrong[:3]:
            r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI},
                           headers={"authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 401
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI},
                       headers={"authorization": wrong[3]})  # fmt: skip
        assert r.status_code == 401
        # Positive control: the rejected requests were logged, by status and without a client name.
        wait_until(lambda: len(access_records(sink)) == 4, "the four access records")
    records = access_records(sink)
    assert [r["status"] for r in records] == [401] * 4 and not {r["client"] for r in records} & {
        "ops",
        "tutor",
    }
    logged = sink.getvalue()
    assert not [key for key in wrong if key.encode() in logged]
    assert not vllm.requests, "nothing reached the upstream"


def test_a_key_can_come_from_a_file(vllm: FakeVLLM, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    cfg = parse(
        {
            "keys": {"batch": {"key_file": str(secret)}},
            "upstreams": {"up0": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        }
    )
    with running(cfg) as url:
        client = OpenAI(base_url=url + "/v1", api_key="sk-from-file", max_retries=0)
        assert client.models.list().data[0].id == "chat"


def test_key_configuration_errors_name_their_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            {
                "keys": {
                    "a": {"key_env": "MISSING_VAR"},
                    "b": {},
                    "c": {"key_env": "K"},
                    "d": {"key_env": "K"},
                },
                "upstreams": {"u": {"kind": "openai", "url": "http://h:1/v1"}},
                "models": {"m": {"targets": [{"upstream": "u", "model": "x"}]}},
            },
            {"K": "same"},
        )
    problems = "\n".join(info.value.problems)
    assert (
        "keys.a.key_env" in problems
        and "keys.b:" in problems
        and "keys.d: the same key as keys.c" in problems
    )
    assert "same" not in problems.replace("the same key", "")


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("10.0.0.5", b"203.0.113.7", ["10.0.0.0/8"], "203.0.113.7"),
        ("10.0.0.5", b"198.51.100.1, 203.0.113.7, 10.0.0.9", ["10.0.0.0/8"], "203.0.113.7"),
        ("203.0.113.9", b"1.2.3.4", ["10.0.0.0/8"], "203.0.113.9"),  # not from a trusted proxy: ignored
        ("10.0.0.5", b"1.2.3.4", [], "10.0.0.5"),  # no trusted proxies configured
        ("10.0.0.5", None, ["10.0.0.0/8"], "10.0.0.5"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: bytes | None, trusted: list[str], client: str
) -> None:
    import ipaddress

    assert forwarded_client(peer, forwarded, [ipaddress.ip_network(t) for t in trusted]) == client
