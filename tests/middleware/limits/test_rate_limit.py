"""Rate limits through Fluido on a real socket, with the memory backend and a real Redis server."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from middleware.limits.config import LimitsConfig
from middleware.limits.limiter import MemoryLimiter
from middleware.limits.rate_limit import RateLimit
from proxy.config import Config, parse
from proxy.limits import Bucket, RateLimits
from proxy.types import Chunk, Stream
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.redis_server import RedisServer
from tests.support.serve import serving, vllm_config
from tests.support.wait import wait_until

HI = [{"role": "user", "content": "hi"}]
ENV = {"TUTOR_KEY": "sk-tutor", "OPS_KEY": "sk-ops"}
TUTOR = {"authorization": "Bearer sk-tutor"}


def limited(
    vllm: FakeVLLM, tutor: dict[str, Any], *, redis: RedisServer | None = None, **extra: Any
) -> Config:
    data: dict[str, Any] = {
        "keys": {"tutor": {"key_env": "TUTOR_KEY", **tutor}, "ops": {"key_env": "OPS_KEY"}},
        "upstreams": {"up0": upstream_for(vllm)},
        "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        **extra,
    }
    if redis is not None:
        data["limits"] = {**data.get("limits", {}), "backend": "redis"}
        data["redis"] = {"url": redis.url, "timeout": 2.0}  # generous: a loaded machine is not an outage
    return parse(data, ENV)


def chat(url: str, headers: dict[str, str] = TUTOR, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI, **body}, headers=headers
    )


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> RedisServer | None:
    return request.getfixturevalue("redis_server") if request.param == "redis" else None


def test_exactly_the_limit_passes_in_its_window(vllm: FakeVLLM, backend: RedisServer | None) -> None:
    with running(limited(vllm, {"rpm": 5}, redis=backend)) as url:
        statuses = [chat(url).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3


def test_every_answer_carries_openai_rate_limit_headers(vllm: FakeVLLM, backend: RedisServer | None) -> None:
    with running(limited(vllm, {"rpm": 2, "tpm": 10000}, redis=backend)) as url:
        ok, _, refused = chat(url), chat(url), chat(url)
    assert (
        ok.headers["x-ratelimit-limit-requests"] == "2"
        and ok.headers["x-ratelimit-remaining-requests"] == "1"
    )
    assert ok.headers["x-ratelimit-limit-tokens"] == "10000"
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 30 and int(refused.headers["retry-after-ms"]) > 0


def test_keys_are_limited_separately_and_per_model(vllm: FakeVLLM) -> None:
    cfg = limited(vllm, {"rpm": 100, "models": {"chat": {"rpm": 1}}})
    with running(cfg) as url:
        assert [chat(url).status_code for _ in range(2)] == [200, 429]
        assert chat(url, headers={"authorization": "Bearer sk-ops"}).status_code == 200, "ops has no limit"


def test_without_keys_each_client_ip_is_limited(vllm: FakeVLLM) -> None:
    cfg = parse(
        {
            "limits": {"rpm": 2, "trusted_proxies": ["127.0.0.1"]},
            "upstreams": {"up0": upstream_for(vllm)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        }
    )
    with running(cfg) as url:
        first = [chat(url, headers={"x-forwarded-for": "203.0.113.1"}).status_code for _ in range(3)]
        second = chat(url, headers={"x-forwarded-for": "203.0.113.2"}).status_code
    assert first == [200, 200, 429] and second == 200


def test_the_sdk_raises_rate_limit_error(vllm: FakeVLLM) -> None:
    with running(limited(vllm, {"rpm": 1})) as url:
        client = OpenAI(base_url=url + "/v1", api_key="sk-tutor", max_retries=0)
        client.chat.completions.create(model="chat", messages=HI)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="chat", messages=HI)
    assert "requests per minute" in info.value.message


def test_the_sdk_retries_after_the_advertised_wait_and_succeeds(vllm: FakeVLLM) -> None:
    vllm.gate = threading.Event()  # the first request holds the only slot until the 429 has been seen
    seen: list[tuple[float, str, httpx.Headers | None]] = []  # what the retrying client sent and got, timed

    def sent(request: Any) -> None:
        seen.append((time.monotonic(), "request", None))

    def got(response: Any) -> None:
        seen.append((time.monotonic(), str(response.status_code), response.headers))

    hooks = {"request": [sent], "response": [got]}
    with running(limited(vllm, {"concurrency": 1})) as url:
        client = OpenAI(base_url=url + "/v1", api_key="sk-tutor", max_retries=0)
        slow = threading.Thread(target=lambda: client.chat.completions.create(model="chat", messages=HI))
        slow.start()
        wait_until(lambda: vllm.requests, "the first request to hold the slot")
        retrying = OpenAI(
            base_url=url + "/v1",
            api_key="sk-tutor",
            max_retries=3,
            http_client=openai.DefaultHttpxClient(event_hooks=hooks),
        )
        result: list[Any] = []
        second = threading.Thread(
            target=lambda: result.append(
                retrying.chat.completions.with_raw_response.create(model="chat", messages=HI)
            )
        )
        second.start()
        wait_until(lambda: any(kind == "429" for _, kind, _ in seen), "the refusal")
        vllm.gate.set()
        slow.join()
        second.join()
        # Closed here: a client left to the garbage collector warns about its socket in a later test.
        client.close()
        retrying.close()
    (raw,) = result
    assert raw.retries_taken >= 1 and raw.parse().choices[0].message.content == vllm.reply
    waits = [
        (after[0] - at, float(headers["retry-after-ms"]) / 1000)
        for (at, kind, headers), after in itertools.pairwise(seen)
        if kind == "429" and headers is not None
    ]
    assert waits and all(advertised > 0 for _, advertised in waits)
    assert all(waited >= advertised - 0.01 for waited, advertised in waits), waits


def test_tokens_are_reconciled_after_a_streamed_reply(vllm: FakeVLLM, backend: RedisServer | None) -> None:
    with running(limited(vllm, {"tpm": 5000}, redis=backend)) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=TUTOR,
                          json={"model": "chat", "messages": HI, "stream": True, "max_tokens": 2000}) as r:  # fmt: skip
            reserved_left = int(r.headers["x-ratelimit-remaining-tokens"])
            r.read()
        after = chat(url, max_tokens=1)
    used = 1 + len(vllm.reply.split())  # the fake's prompt and completion tokens
    assert reserved_left < 5000 - 2000, "the reservation covered max_tokens"
    # The next request sees the unused reservation returned: only what was really used is gone.
    remaining = int(after.headers["x-ratelimit-remaining-tokens"])
    assert 5000 - used - 30 <= remaining <= 5000 - used


def test_a_client_leaving_mid_stream_releases_its_concurrency_slot(
    vllm: FakeVLLM, backend: RedisServer | None
) -> None:
    vllm.reply = " ".join(["word"] * 50)
    vllm.delay_between = 0.1
    with running(limited(vllm, {"concurrency": 1}, redis=backend)) as url:
        body = {"model": "chat", "messages": HI, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=TUTOR) as r:
            lines = r.iter_lines()  # kept: dropping the iterator would close the connection here
            next(lines)
            assert chat(url).status_code == 429, "the slot is taken while the stream runs"
            lines.close()
        wait_until(lambda: chat(url).status_code == 200, "the slot to be released")


def test_tokens_are_given_back_when_the_upstream_fails(vllm: FakeVLLM, backend: RedisServer | None) -> None:
    with running(limited(vllm, {"tpm": 5000}, redis=backend)) as url:
        vllm.fail_status = 500
        failed = chat(url, max_tokens=2000)
        vllm.fail_status = None
        after = chat(url, max_tokens=1)
    assert failed.status_code == 502
    assert int(failed.headers["x-ratelimit-remaining-tokens"]) < 5000 - 2000, "it was reserved"
    # Nothing was generated: the next request sees the whole budget but its own small reservation.
    assert after.status_code == 200 and int(after.headers["x-ratelimit-remaining-tokens"]) >= 5000 - 30


@pytest.mark.parametrize("ending", ["client_leaves", "stream_breaks"])
def test_tokens_are_settled_after_a_stream_ends_early(
    vllm: FakeVLLM, backend: RedisServer | None, ending: str
) -> None:
    """No usage report comes from a stream cut short: what was generated is charged, not max_tokens."""
    vllm.reply = " ".join(["word"] * 50)
    if ending == "client_leaves":
        vllm.delay_between = 0.1
    else:
        vllm.error_after = 3
    body = {"model": "chat", "messages": HI, "stream": True, "max_tokens": 2000}
    with running(limited(vllm, {"tpm": 5000}, redis=backend)) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=TUTOR) as r:
            reserved_left = int(r.headers["x-ratelimit-remaining-tokens"])
            lines = r.iter_lines()
            if ending == "client_leaves":
                next(lines)
                lines.close()
            else:
                assert "error" in "".join(lines)
        vllm.error_after, vllm.reply = None, "ok"  # each check below then costs a few tokens only
        polls: list[int] = []

        def remaining() -> int:
            polls.append(int(chat(url, max_tokens=1).headers["x-ratelimit-remaining-tokens"]))
            return polls[-1]

        left = wait_until(lambda: remaining() > 4000 and polls[-1], "the early end to be settled")
    assert reserved_left < 5000 - 2000, "the reservation covered max_tokens"
    # Charged: the prompt and the few words streamed (tens of tokens), the earlier checks (2 tokens each:
    # one prompt word, one answer word) and the last check's own reservation; not max_tokens.
    assert left >= 5000 - 50 - 2 * (len(polls) - 1) - 10, polls


def test_two_fluido_processes_sharing_redis_enforce_one_limit(
    vllm: FakeVLLM, redis_server: RedisServer, tmp_path: Path
) -> None:
    extra = (
        '[keys.tutor]\nkey_env = "TUTOR_KEY"\nrpm = 6\n[keys.ops]\nkey_env = "OPS_KEY"\n'
        f'[limits]\nbackend = "redis"\n[redis]\nurl = "{redis_server.url}"\ntimeout = 2.0\n'
    )
    config = vllm_config(tmp_path / "config.toml", vllm.url, extra)
    with ExitStack() as stack:
        urls = [stack.enter_context(serving(config, workers=1, env=ENV)) for _ in range(2)]
        statuses = [chat(urls[i % 2]).status_code for i in range(10)]
    assert statuses.count(200) == 6 and statuses[6:] == [429] * 4


def test_two_fluido_apps_in_one_process_sharing_redis_enforce_one_limit(
    vllm: FakeVLLM, redis_server: RedisServer
) -> None:
    cfg = limited(vllm, {"rpm": 6}, redis=redis_server)
    with ExitStack() as stack:
        urls = [stack.enter_context(running(cfg)), stack.enter_context(running(cfg))]
        statuses = [chat(urls[i % 2]).status_code for i in range(10)]
    assert statuses.count(200) == 6 and statuses[6:] == [429] * 4


def test_an_upstream_limit_holds_for_all_clients_together(vllm: FakeVLLM) -> None:
    vllm.gate = threading.Event()
    cfg = parse(
        {
            "upstreams": {"up0": upstream_for(vllm, concurrency=1)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        }
    )
    with running(cfg) as url:
        first: list[int] = []
        slow = threading.Thread(target=lambda: first.append(chat(url, headers={}).status_code))
        slow.start()
        wait_until(lambda: vllm.requests, "the first request to reach the upstream")
        busy = chat(url, headers={})
        vllm.gate.set()
        slow.join()
        after = chat(url, headers={})
    assert first == [200] and after.status_code == 200
    assert busy.status_code == 429 and "retry-after" in busy.headers
    assert len(vllm.requests) == 2, "the refused request never reached the upstream"


def test_an_upstreams_rpm_holds_for_all_keys_together(vllm: FakeVLLM) -> None:
    cfg = parse(
        {
            "keys": {"tutor": {"key_env": "TUTOR_KEY"}, "ops": {"key_env": "OPS_KEY"}},
            "upstreams": {"up0": upstream_for(vllm, rpm=2)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL}]}},
        },
        ENV,
    )
    ops = {"authorization": "Bearer sk-ops"}
    with running(cfg) as url:
        statuses = [chat(url).status_code, chat(url, headers=ops).status_code]
        refused = chat(url, headers=ops)
    assert statuses == [200, 200], "each key alone is far from any limit of its own"
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert len(vllm.requests) == 2


def test_an_upstream_at_its_rpm_hands_over_to_the_next_target(vllm: FakeVLLM, ollama: FakeOllama) -> None:
    cfg = parse(
        {
            "upstreams": {"up0": upstream_for(vllm, rpm=2), "up1": upstream_for(ollama)},
            "models": {"chat": {"targets": [{"upstream": "up0", "model": VLLM_MODEL},
                                            {"upstream": "up1", "model": OLLAMA_MODEL}]}},
        }
    )  # fmt: skip
    with running(cfg) as url:
        served = [chat(url, headers={}) for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 200]
    assert [r.headers["x-fluido-upstream"] for r in served] == ["up0", "up0", "up1"]
    assert len(vllm.requests) == 2 and served[2].json()["choices"][0]["message"]["content"] == ollama.reply


@pytest.fixture
def redis_down_config(vllm: FakeVLLM, redis_server: RedisServer) -> Iterator[tuple[RedisServer, FakeVLLM]]:
    yield redis_server, vllm
    if not redis_server.running:
        redis_server.start()


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_going_away_fails_as_configured_and_limits_resume_when_it_returns(
    redis_down_config: tuple[RedisServer, FakeVLLM], fail: str
) -> None:
    redis, vllm = redis_down_config
    cfg = limited(vllm, {"rpm": 2}, redis=redis, limits={"fail": fail})
    with running(cfg) as url:
        assert chat(url).status_code == 200
        redis.stop()
        down = chat(url)
        ready = httpx.get(f"{url}/ready").json()
        metrics = httpx.get(f"{url}/metrics").text
        redis.start()
        statuses = [chat(url).status_code for _ in range(3)]
    if fail == "open":
        assert down.status_code == 200
    else:
        assert down.status_code == 503 and down.json()["error"]["code"] == "rate_limiter_unavailable"
    assert ready["dependencies"]["redis"]["ok"] is False
    assert "fluido_limiter_unavailable_total 1.0" in metrics
    assert statuses == [200, 200, 429], "a fresh Redis starts a fresh window, and limits hold again"


async def test_the_concurrency_slot_is_released_even_when_closing_the_stream_fails() -> None:
    """A stream whose closing raises (a client leaving while another task iterates it) still settles."""
    limiter = MemoryLimiter(900.0)
    buckets = [Bucket("ip:c", "ip:c", RateLimits(concurrency=1))]

    async def breaks_on_close() -> Stream:
        try:
            yield Chunk(content="a")
            yield Chunk(content="b")
        finally:
            raise RuntimeError("closing failed")

    grant = await limiter.acquire(buckets, 10)
    assert grant.allowed and not (await limiter.acquire(buckets, 10)).allowed, "the slot is taken"
    stream = RateLimit(limiter, LimitsConfig(), {})._settling(breaks_on_close(), grant, 10, 5)
    assert (await anext(stream)).content == "a"
    with pytest.raises(RuntimeError, match="closing failed"):
        await stream.aclose()
    assert (await limiter.acquire(buckets, 10)).allowed, "the slot was released"
