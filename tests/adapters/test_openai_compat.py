"""Pass-through details of the OpenAI-compatible adapter."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, threaded
from tests.fakes.vllm import FakeVLLM

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def keyed_vllm() -> Iterator[FakeVLLM]:
    with threaded(FakeVLLM(api_key="sk-upstream")) as fake:
        assert isinstance(fake, FakeVLLM)
        yield fake


def keyed_config(fake: FakeVLLM, key_env: str) -> object:
    return parse(
        {
            "upstreams": {"vllm": {"kind": "openai", "url": fake.url + "/v1", "api_key_env": key_env}},
            "models": {
                "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL, "options": {"priority": 5}}]}
            },
        }
    )


def test_the_upstream_gets_its_own_key_never_the_clients(
    keyed_vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_KEY", "sk-upstream")
    with running(keyed_config(keyed_vllm, "VLLM_KEY")) as url:  # type: ignore[arg-type]
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": HI},
            headers={"authorization": "Bearer sk-client-secret"},
        )
    assert r.status_code == 200
    assert keyed_vllm.headers[-1]["Authorization"] == "Bearer sk-upstream"


def test_a_wrong_upstream_key_is_a_502_not_the_clients_401(
    keyed_vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_KEY", "sk-wrong")
    with running(keyed_config(keyed_vllm, "VLLM_KEY")) as url:  # type: ignore[arg-type]
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI})
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"


def test_vllm_extras_and_target_options_pass_through(
    keyed_vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_KEY", "sk-upstream")
    extras = {
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "structured_outputs": {"choice": ["yes", "no"]},
    }
    with running(keyed_config(keyed_vllm, "VLLM_KEY")) as url:  # type: ignore[arg-type]
        httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI, **extras})
    sent = keyed_vllm.requests[-1]
    assert {k: sent[k] for k in extras} == extras
    assert sent["priority"] == 5 and sent["model"] == VLLM_MODEL
