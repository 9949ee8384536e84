"""One timed request: TTFT at the first token, ITL, token counts, shed and broken answers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from bench.load.client import ERROR, OK, SHED, Record, send
from tests.bench.load.conftest import ITL_S, PER_WORD_S, PREFILL_S
from tests.fakes.capacity import FakeCapacity
from tests.support.wait import until

WORDS = 20


def body(tokens: int = 8, stream: bool = True, usage: bool = True) -> bytes:
    doc: dict[str, Any] = {
        "model": "capacity-model",
        "messages": [{"role": "user", "content": " ".join(["word"] * WORDS)}],
        "max_tokens": tokens,
    }
    if stream:
        doc["stream"] = True
        if usage:
            doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


async def call(fake: FakeCapacity, raw: bytes, stream: bool = True) -> Record:
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        url = fake.url + "/v1/chat/completions"
        return await send(
            session, url, raw, stream=stream, query_class="short", sent=0.0, lag=0.0, give_up_after=10
        )


async def test_ttft_and_itl_match_the_servers_timings(fake: FakeCapacity) -> None:
    record = await call(fake, body(tokens=8))
    assert record.outcome == OK and record.status == 200 and record.error == ""
    assert record.ttft == pytest.approx(PREFILL_S + PER_WORD_S * WORDS, abs=0.02)
    assert len(record.itl) == 7
    assert sum(record.itl) / len(record.itl) == pytest.approx(ITL_S, abs=0.004)
    assert record.e2e == pytest.approx(record.ttft + 7 * ITL_S, abs=0.02)
    assert (record.output_tokens, record.prompt_tokens, record.usage_reported) == (8, WORDS, True)


async def test_ttft_waits_for_the_first_token_not_for_the_headers(fake: FakeCapacity) -> None:
    """The fake sends status and the role chunk at once; the first token comes after the prefill."""
    fake.early_head = True
    fake.prefill_base_s = 0.15
    record = await call(fake, body(tokens=3))
    assert record.outcome == OK
    assert record.ttft is not None and record.ttft >= 0.15


async def test_without_usage_the_tokens_are_counted_from_the_stream(fake: FakeCapacity) -> None:
    record = await call(fake, body(tokens=6, usage=False))
    assert record.outcome == OK
    assert (record.output_tokens, record.prompt_tokens, record.usage_reported) == (6, None, False)


async def test_a_whole_answer_is_timed_as_one(fake: FakeCapacity) -> None:
    record = await call(fake, body(tokens=5, stream=False), stream=False)
    assert record.outcome == OK and record.output_tokens == 5 and record.usage_reported
    assert record.ttft == pytest.approx(record.e2e, abs=0.005)
    assert record.e2e >= PREFILL_S + PER_WORD_S * WORDS + 4 * ITL_S


@pytest.mark.parametrize("status", [429, 503])
async def test_429_and_503_count_as_shed_with_their_latency(fake: FakeCapacity, status: int) -> None:
    fake.fail_status = status
    record = await call(fake, body())
    assert (record.outcome, record.status, record.ttft) == (SHED, status, None)
    assert record.error == ("TooManyRequests" if status == 429 else "ServiceUnavailable")  # vLLM's error type
    assert 0 < record.e2e < 1


async def test_other_statuses_are_errors_not_shed(fake: FakeCapacity) -> None:
    fake.fail_status = 500
    record = await call(fake, body())
    assert (record.outcome, record.status, record.error) == (ERROR, 500, "InternalServerError")


async def test_ollamas_server_busy_503_is_shed() -> None:
    async with FakeCapacity(1, mode="ollama", itl_s=0.05, max_queue=0) as fake:
        running = asyncio.create_task(call(fake, body(tokens=4)))
        await until(lambda: fake.in_flight == 1)
        refused = await call(fake, body(tokens=4))
        assert (await running).outcome == OK  # positive control: the one that fitted went through
    assert (refused.outcome, refused.status, refused.error) == (SHED, 503, "api_error")


async def test_a_stream_cut_mid_way_is_an_error(fake: FakeCapacity) -> None:
    fake.drop_after = 3
    record = await call(fake, body(tokens=8))
    assert (record.outcome, record.status, record.error) == (ERROR, 200, "connection_cut")
    assert record.ttft is not None  # it had started: the TTFT is still known


async def test_an_error_event_in_the_stream_is_an_error(fake: FakeCapacity) -> None:
    fake.error_after = 2
    record = await call(fake, body(tokens=8))
    assert (record.outcome, record.error) == (ERROR, "stream_error_event")


async def test_a_stream_that_ends_without_finish_reason_is_an_error(fake: FakeCapacity) -> None:
    fake.omit_finish = True
    record = await call(fake, body(tokens=4))
    assert (record.outcome, record.error, record.output_tokens) == (ERROR, "no_finish_reason", 4)


async def test_a_server_that_is_not_there_is_an_error() -> None:
    async with FakeCapacity(1) as fake:
        url = fake.url
    async with aiohttp.ClientSession() as session:
        record = await send(session, url + "/v1/chat/completions", body(), stream=True, query_class="s",
                            sent=0, lag=0, give_up_after=5)  # fmt: skip
    assert (record.outcome, record.status, record.error) == (ERROR, 0, "connect_failed")


async def test_a_request_past_its_time_is_given_up(fake: FakeCapacity) -> None:
    fake.itl_s = 0.2
    async with aiohttp.ClientSession() as session:
        record = await send(session, fake.url + "/v1/chat/completions", body(tokens=20), stream=True,
                            query_class="s", sent=0, lag=0, give_up_after=0.3, timeout_code="unfinished_at_end")  # fmt: skip
    assert (record.outcome, record.error) == (ERROR, "unfinished_at_end")
    assert record.e2e == pytest.approx(0.3, abs=0.05)


def test_a_record_survives_json() -> None:
    record = Record("long", 1.5, 0.001, 200, OK, "", 0.12, 0.5, (0.01, 0.02), 2, 40, True)
    assert Record.from_json(orjson.loads(orjson.dumps(record.to_json()))) == record
