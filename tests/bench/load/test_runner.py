"""Cells against the fixed-capacity fake: figures at low load, open loop on schedule, closed loop at N."""

from __future__ import annotations

import pytest

from bench.load.prompts import Prompt, builtin_prompts, parse_mix
from bench.load.runner import Endpoint, Runner, Settings, normalise_base
from bench.load.schedule import Load
from bench.load.stats import summarize
from tests.bench.load.conftest import ITL_S, PER_WORD_S, PREFILL_S
from tests.fakes.capacity import FakeCapacity

WORDS = 10
PROMPTS = [
    Prompt("short", {"messages": [{"role": "user", "content": " ".join(["w"] * WORDS)}], "max_tokens": 6})
]


def settings(**changes: object) -> Settings:
    base = {"duration": 2.0, "requests": None, "drain": 5.0, "timeout": 30.0, "seed": 0, "burstiness": 1.0,
            "stream": True, "include_usage": True}  # fmt: skip
    return Settings(**(base | changes))  # type: ignore[arg-type]


def endpoint(fake: FakeCapacity) -> Endpoint:
    return Endpoint("fake", normalise_base(fake.url))


async def test_figures_at_low_load_match_the_fakes_timings(fake: FakeCapacity) -> None:
    cell = await Runner(settings(), PROMPTS, {}).run(endpoint(fake), "capacity-model", Load("rate", 5.0))
    s = summarize(cell)
    assert s.requests == fake.requests_seen and s.ok == s.requests > 3
    assert s.ttft_p50 == pytest.approx(PREFILL_S + PER_WORD_S * WORDS, abs=0.015)
    assert s.itl_p50 == pytest.approx(ITL_S, abs=0.003)
    assert s.output_tps == pytest.approx(6 * s.completed_rps, rel=0.01)
    # The generator kept its schedule (within the scheduling noise of a busy machine).
    assert s.lag_p99 is not None and s.lag_p99 < 0.05


async def test_an_open_loop_sends_on_schedule_while_the_server_falls_behind() -> None:
    async with FakeCapacity(1, prefill_base_s=0.0, itl_s=0.03) as slow:
        runner = Runner(settings(duration=0.5), PROMPTS, {})
        cell = await runner.run(endpoint(slow), "capacity-model", Load("rate", 20.0))
    s = summarize(cell)
    assert slow.max_waiting >= 3 and slow.max_in_flight == 1
    assert s.lag_p99 is not None and s.lag_p99 < 0.05
    assert s.ttft_p99 is not None and s.ttft_p99 > 0.4  # the queue shows in the figures


async def test_a_closed_loop_keeps_n_requests_in_flight(fake: FakeCapacity) -> None:
    runner = Runner(settings(duration=None, requests=12), PROMPTS, {})
    cell = await runner.run(endpoint(fake), "capacity-model", Load("concurrency", 3))
    assert len(cell.records) == 12 and fake.max_in_flight == 3


async def test_requests_still_running_after_the_drain_are_recorded_unfinished(fake: FakeCapacity) -> None:
    fake.itl_s = 0.2
    runner = Runner(settings(duration=0.2, drain=0.3), PROMPTS, {})
    cell = await runner.run(endpoint(fake), "capacity-model", Load("rate", 10.0))
    assert cell.records and {r.error for r in cell.records} == {"unfinished_at_end"}
    assert cell.wall < 1.0


async def test_the_api_key_and_the_built_in_mix_reach_the_server(fake: FakeCapacity) -> None:
    fake.prefill_per_token_s = 0.0  # long prompts: no need to wait for their prefill here
    prompts = builtin_prompts(parse_mix("short=1,long=1"), 64, seed=0)
    runner = Runner(settings(duration=None, requests=8), prompts, {"Authorization": "Bearer sk-test"})
    cell = await runner.run(endpoint(fake), "capacity-model", Load("concurrency", 4))
    assert {h["Authorization"] for h in fake.headers} == {"Bearer sk-test"}
    assert {r["stream_options"]["include_usage"] for r in fake.requests} == {True}
    assert {r.query_class for r in cell.records} == {p.query_class for p in prompts[:8]}


@pytest.mark.parametrize(
    "url", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/chat/completions"]
)
def test_a_root_or_a_v1_base_is_the_same_endpoint(url: str) -> None:
    assert normalise_base(url) == "http://h:1/v1"


def test_a_url_without_scheme_is_refused() -> None:
    with pytest.raises(ValueError):
        normalise_base("localhost:8080")
