"""The exact response cache through Fluido: keys, determinism, replay fidelity, tenants, Redis, controls."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_client
from openai import OpenAI

from middleware.cache.flow import exact_digest
from middleware.cache.store import MemoryStore
from proxy.config import Config, parse
from proxy.parsing import parse_chat
from tests.conftest import model_of, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

Fake = FakeOllama | FakeVLLM
HI = [{"role": "user", "content": "What is the boiling point of water?"}]
ENV = {"A_KEY": "sk-a", "B_KEY": "sk-b", "C_KEY": "sk-c", "ADMIN_KEY": "sk-admin"}


def cached(
    fake: Fake, *, redis: RedisServer | None = None, keys: dict[str, Any] | None = None, **cache: Any
) -> Config:
    data: dict[str, Any] = {
        "upstreams": {"up0": upstream_for(fake)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": model_of(fake)}]}},
        "cache": cache,
    }
    if redis is not None:
        data["cache"] = {**cache, "backend": "redis"}
        data["redis"] = {"url": redis.url, "timeout": 2.0}  # generous: a loaded machine is not an outage
    if keys is not None:
        data["keys"] = keys
    return parse(data, ENV)


def chat_count(fake: Fake) -> int:
    return sum(1 for r in fake.requests if r.get("messages"))


def post(url: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"model": "chat", "messages": HI, "temperature": 0, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=headers or {})


def stream_chat(url: str) -> Any:
    """A deterministic streamed chat, as a context manager over the open response."""
    body = {"model": "chat", "messages": HI, "temperature": 0, "stream": True}
    return httpx.stream("POST", f"{url}/v1/chat/completions", json=body)


def key_of(**body: Any) -> str:
    return exact_digest(parse_chat(orjson.dumps({"model": "chat", "messages": HI, **body})))


def test_the_key_is_canonical_and_covers_every_output_affecting_field() -> None:
    reordered = parse_chat(
        b'{"temperature": 0, "messages": [{"content": "What is the boiling point of water?", "role": "user"}], "model": "chat"}'
    )
    assert exact_digest(reordered) == key_of(temperature=0)
    assert key_of(temperature=0, user="alice") == key_of(temperature=0), "'user' does not change the answer"
    variants = [
        key_of(temperature=0),
        key_of(temperature=0.0001),
        key_of(),  # omitted temperature: OpenAI's 1.0
        key_of(temperature=0, max_tokens=10),
        key_of(temperature=0, seed=3),
        key_of(temperature=0, stop=["\n"]),
        key_of(temperature=0, top_k=5),
        key_of(temperature=0, response_format={"type": "json_object"}),
        key_of(temperature=0, tools=[{"type": "function", "function": {"name": "f"}}]),
        key_of(temperature=0, model="other"),
    ]
    assert len(set(variants)) == len(variants)


def test_a_deterministic_repeat_is_a_hit_and_costs_the_upstream_nothing(upstream: Fake) -> None:
    with running(cached(upstream)) as url:
        first, second = post(url), post(url)
    assert (first.headers["x-fluido-cache"], second.headers["x-fluido-cache"]) == ("miss", "hit")
    assert (
        second.json()["choices"] == first.json()["choices"]
        and second.json()["usage"] == first.json()["usage"]
    )
    assert chat_count(upstream) == 1


def test_sampled_requests_are_not_cached_unless_configured(upstream: Fake) -> None:
    with running(cached(upstream)) as url:
        assert [post(url, temperature=0.7).headers["x-fluido-cache"] for _ in range(2)] == [
            "bypass",
            "bypass",
        ]
    with running(cached(upstream, sampled=True)) as url:
        assert [post(url, temperature=0.7).headers["x-fluido-cache"] for _ in range(2)] == ["miss", "hit"]


def sdk_stream(client: OpenAI, **extra: Any) -> tuple[str, list[tuple[str, str]], Any, list[str]]:
    """What the SDK accumulates from a stream: text, tool calls, usage, and the pieces as they came."""
    pieces, calls, usage = [], {}, None
    for chunk in client.chat.completions.create(
        model="chat", messages=HI, temperature=0, stream=True, stream_options={"include_usage": True}, **extra
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            for t in choice.delta.tool_calls or ():
                entry = calls.setdefault(t.index, ["", ""])
                entry[0] = entry[0] or (t.function.name or "")
                entry[1] += t.function.arguments or ""
    return "".join(pieces), [tuple(calls[i]) for i in sorted(calls)], usage, pieces


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_calls"])
def test_a_streamed_hit_replays_what_the_sdk_accumulated_from_the_original(
    upstream: Fake, tools: bool
) -> None:
    if tools:
        upstream.tool_calls = [
            {"name": "lookup", "arguments": {"q": "water"}},
            {"name": "lookup", "arguments": {"q": "ice"}},
        ]
    with running(cached(upstream)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        original = sdk_stream(client)
        replayed = sdk_stream(client)
    assert replayed == original, "content in its original pieces, tool calls by index, usage"
    assert chat_count(upstream) == 1
    if tools:
        assert [(n, json.loads(a)) for n, a in replayed[1]] == [
            ("lookup", {"q": "water"}),
            ("lookup", {"q": "ice"}),
        ]


def test_stream_and_non_stream_requests_hit_each_others_entries(upstream: Fake) -> None:
    with running(cached(upstream)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        text, _, _, _ = sdk_stream(client)
        whole = client.chat.completions.with_raw_response.create(model="chat", messages=HI, temperature=0)
    assert whole.headers["x-fluido-cache"] == "hit" and whole.parse().choices[0].message.content == text
    assert chat_count(upstream) == 1


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_calls"])
def test_a_non_stream_entry_is_replayed_as_sse_through_the_sdk(upstream: Fake, tools: bool) -> None:
    if tools:
        upstream.tool_calls = [{"name": "lookup", "arguments": {"q": "water"}}]
    with running(cached(upstream)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        whole = client.chat.completions.create(model="chat", messages=HI, temperature=0)
        with client.chat.completions.with_streaming_response.create(
            model="chat", messages=HI, temperature=0, stream=True, stream_options={"include_usage": True}
        ) as raw:
            assert raw.headers["x-fluido-cache"] == "hit"
            assert raw.headers["content-type"].startswith("text/event-stream")
        text, calls, usage, _ = sdk_stream(client)
    message = whole.choices[0].message
    assert text == (message.content or "")
    assert [(n, json.loads(a)) for n, a in calls] == [
        (t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls or ()
    ]
    assert usage is not None and usage.total_tokens == whole.usage.total_tokens  # type: ignore[union-attr]
    assert chat_count(upstream) == 1, "the stream was served from the non-stream entry"


@pytest.mark.parametrize("fault", ["error_after", "drop_after"])
def test_a_stream_that_fails_is_not_stored(upstream: Fake, fault: str) -> None:
    setattr(upstream, fault, 2)
    with running(cached(upstream)) as url:
        with stream_chat(url) as r:
            r.read()
        setattr(upstream, fault, None)
        again = post(url)
    assert again.headers["x-fluido-cache"] == "miss" and chat_count(upstream) == 2


def test_an_abandoned_stream_is_not_stored(upstream: Fake) -> None:
    upstream.reply = " ".join(["word"] * 30)
    upstream.delay_between = 0.05
    with running(cached(upstream)) as url:
        with stream_chat(url) as r:
            lines = r.iter_lines()
            next(lines)
            lines.close()
        # Wait until the upstream has seen the client leave: by then the stream would have been stored.
        wait_until(lambda: upstream.disconnects == 1, "the upstream to see the client leave")
        upstream.delay_between = 0
        assert post(url).headers["x-fluido-cache"] == "miss"
        # Check again once a whole reply has had time to finish: the abandoned one never lands later.
        assert post(url).headers["x-fluido-cache"] == "hit", "positive control: a finished reply is stored"
        upstream.delay_between = 0.05
        with stream_chat(url) as r:
            assert r.headers["x-fluido-cache"] == "hit"
            r.read()
    assert chat_count(upstream) == 2, "the abandoned stream and the one miss after it"


def test_cache_control_no_cache_skips_the_lookup_and_no_store_skips_both(upstream: Fake) -> None:
    with running(cached(upstream)) as url:
        post(url)
        assert post(url, headers={"cache-control": "no-cache"}).headers["x-fluido-cache"] == "miss"
        assert (
            post(url, headers={"cache-control": "no-store"}, max_tokens=5).headers["x-fluido-cache"]
            == "bypass"
        )
        assert post(url, max_tokens=5).headers["x-fluido-cache"] == "miss", "no-store stored nothing"
    assert chat_count(upstream) == 4


def tenants() -> dict[str, Any]:
    return {
        "a": {"key_env": "A_KEY"},
        "b": {"key_env": "B_KEY"},
        "admin": {"key_env": "ADMIN_KEY", "admin": True, "share_cache": True},
    }


def as_key(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_keys_with_share_cache_share_their_answers(vllm: FakeVLLM) -> None:
    keys = {**tenants(), "c": {"key_env": "C_KEY", "share_cache": True}}
    with running(cached(vllm, keys=keys)) as url:
        assert post(url, as_key("sk-c")).headers["x-fluido-cache"] == "miss"
        assert post(url, as_key("sk-admin")).headers["x-fluido-cache"] == "hit", "another sharing key"
        assert post(url, as_key("sk-a")).headers["x-fluido-cache"] == "miss", "a key that does not share"
        assert post(url, as_key("sk-c")).headers["x-fluido-cache"] == "hit"
    assert chat_count(vllm) == 2


def test_entries_are_isolated_per_api_key(vllm: FakeVLLM) -> None:
    with running(cached(vllm, keys=tenants())) as url:
        assert post(url, as_key("sk-a")).headers["x-fluido-cache"] == "miss"
        assert post(url, as_key("sk-b")).headers["x-fluido-cache"] == "miss", "b never sees a's answer"
        assert post(url, as_key("sk-a")).headers["x-fluido-cache"] == "hit"


def test_purge_is_for_admin_keys_and_empties_a_namespace(vllm: FakeVLLM) -> None:
    with running(cached(vllm, keys=tenants())) as url:
        post(url, as_key("sk-a"))
        refused = httpx.post(f"{url}/admin/cache/purge", headers=as_key("sk-a"))
        done = httpx.post(f"{url}/admin/cache/purge", json={"namespace": "key-a"}, headers=as_key("sk-admin"))
        after = post(url, as_key("sk-a")).headers["x-fluido-cache"]
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert done.json() == {"purged": 1, "namespace": "key-a"} and after == "miss"


def test_a_second_replica_hits_through_redis(vllm: FakeVLLM, redis_server: RedisServer) -> None:
    cfg = cached(vllm, redis=redis_server)
    with ExitStack() as stack:
        one, two = stack.enter_context(running(cfg)), stack.enter_context(running(cfg))
        assert post(one).headers["x-fluido-cache"] == "miss"
        assert post(two).headers["x-fluido-cache"] == "hit"
    assert chat_count(vllm) == 1


def test_a_corrupt_redis_entry_is_a_miss_and_is_removed(vllm: FakeVLLM, redis_server: RedisServer) -> None:
    with running(cached(vllm, redis=redis_server)) as url:
        post(url)
        client = redis_client.Redis.from_url(redis_server.url)
        (key,) = client.keys("fluido:cache:*")
        client.set(key, b"not zlib at all")
        assert post(url).headers["x-fluido-cache"] == "miss"
        assert post(url).headers["x-fluido-cache"] == "hit", "replaced by a good entry"


def test_redis_going_away_bypasses_the_cache_and_counts_it(vllm: FakeVLLM, redis_server: RedisServer) -> None:
    with running(cached(vllm, redis=redis_server)) as url:
        redis_server.stop()
        try:
            r = post(url)
            ready = httpx.get(f"{url}/ready").json()
            metrics = httpx.get(f"{url}/metrics").text
        finally:
            redis_server.start()
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == vllm.reply
    assert ready["dependencies"]["cache_redis"]["ok"] is False and ready["status"] == "ready"
    assert "fluido_cache_unavailable_total 2.0" in metrics, "the failed look-up and the failed store"


async def test_the_memory_store_evicts_least_recently_used_past_its_bytes_and_expires() -> None:
    now = [0.0]
    store = MemoryStore(max_bytes=10, clock=lambda: now[0])
    await store.set("a", b"12345", ttl=60)
    await store.set("b", b"12345", ttl=60)
    await store.get("a")
    await store.set("c", b"12345", ttl=60)
    assert await store.get("b") is None and await store.get("a") == b"12345" and store.size == 10
    now[0] = 61
    assert await store.get("a") is None and store.size == 5
