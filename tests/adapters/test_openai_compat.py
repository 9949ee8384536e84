"""Pass-through details of the OpenAI-compatible adapter."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from adapters.openai_compat import parse_chunks, request_body, text_event
from proxy.config import parse
from proxy.errors import UpstreamError
from proxy.parsing import chat_from_dict
from proxy.types import Chunk, Target, Usage
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


def test_ollama_fields_become_an_openai_servers_own() -> None:
    """From Ollama's door: shared sampling options and think are translated; runner options are dropped."""
    extra = {"options": {"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1, "num_ctx": 8192}, "keep_alive": "5m",
             "think": True}  # fmt: skip
    req = chat_from_dict({"model": "chat", "messages": HI, **extra})
    body = request_body(req, Target("vllm", VLLM_MODEL))
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.1, 1.1)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert not {"options", "keep_alive", "think", "num_ctx"} & set(body)
    levelled = request_body(
        chat_from_dict({"model": "chat", "messages": HI, "think": "low"}), Target("v", "m")
    )
    assert levelled["reasoning_effort"] == "low"
    plain = request_body(chat_from_dict({"model": "chat", "messages": HI, "top_k": 5}), Target("v", "m"))
    assert plain["top_k"] == 5 and "chat_template_kwargs" not in plain


def event(delta: dict[str, object], **choice: object) -> dict[str, object]:
    one = {"index": 1, "delta": delta, "logprobs": None, "finish_reason": None, **choice}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [one]}


def test_a_text_event_is_read_the_short_way_into_the_same_chunk() -> None:
    assert text_event(event({"content": "hi"})) == Chunk(1, content="hi")
    assert parse_chunks(event({"content": "hi"})) == [Chunk(1, content="hi")]


@pytest.mark.parametrize(
    ("data", "chunks"),
    [
        (event({"role": "assistant", "content": ""}), [Chunk(1, role="assistant", content="")]),
        (event({"content": "end"}, finish_reason="stop"), [Chunk(1, content="end", finish_reason="stop")]),
        (
            event({"content": "x"}, logprobs={"content": []}),
            [Chunk(1, content="x", logprobs={"content": []})],
        ),
        (event({"reasoning_content": "hm"}), [Chunk(1, reasoning="hm")]),
        (event({"content": None}), [Chunk(1)]),
        (
            {**event({"content": "x"}), "usage": {"prompt_tokens": 2, "completion_tokens": 1}},
            [Chunk(1, content="x"), Chunk(usage=Usage(2, 1))],
        ),
        (
            {"choices": [event({"content": "a"})["choices"][0], {"index": 2, "delta": {"content": "b"}}]},  # type: ignore[index]
            [Chunk(1, content="a"), Chunk(2, content="b")],
        ),
    ],
)
def test_any_other_event_is_left_to_the_general_reading(data: dict[str, object], chunks: list[Chunk]) -> None:
    assert text_event(data) is None
    assert parse_chunks(data) == chunks


def test_an_error_event_is_never_read_as_text() -> None:
    data = {**event({"content": "x"}), "error": {"message": "out of memory"}}
    assert text_event(data) is None
    with pytest.raises(UpstreamError, match="out of memory"):
        parse_chunks(data)
