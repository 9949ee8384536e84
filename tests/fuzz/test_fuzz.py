"""The bounded, seeded part of the fuzz suite (``make fuzz`` runs the same cases for minutes): every reply
is a well-formed success or a 4xx in OpenAI's shape, never a 5xx, plain text, broken stream or hang, and
Fluido still answers /health afterwards."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from proxy.config import parse
from tests.conftest import running
from tests.fuzz.cases import Case
from tests.fuzz.oracle import FAILURES, Reply, chat_success, judge, openai_error
from tests.fuzz.routes import FuzzRoute, routes
from tests.fuzz.target import ALIASES, fakes, fuzz_config
from tests.fuzz.wire import HANG_SECONDS, send

ROUTES = {route.path: route for route in routes(ALIASES)}
EXAMPLES = {"/v1/chat/completions": 300, "/v1/embeddings": 80, "/api/chat": 80, "/api/generate": 60}


LOG = io.BytesIO()  # Fluido's log: a failure shows the exception behind it


@pytest.fixture(scope="module")
def fluido() -> Iterator[httpx.Client]:
    with (
        fakes() as f,
        running(parse(fuzz_config(f.vllm.url, f.ollama.url)), log_sink=LOG) as url,
        httpx.Client(base_url=url, timeout=HANG_SECONDS) as client,
    ):
        yield client
        assert client.get("/health").status_code == 200, "Fluido still answers after the fuzzing"


def check(client: httpx.Client, route: FuzzRoute, case: Case) -> None:
    verdict, problem = judge(send(client, case), route.success, route.error, case.transport)
    if verdict in FAILURES:
        errors = [line for line in LOG.getvalue().splitlines() if b'"exception"' in line]
        detail = errors[-1][-2000:].decode(errors="replace") if errors else "(nothing logged)"
        pytest.fail(f"{verdict}: {problem}\n{case!r}\nlast logged exception: {detail}")


@pytest.mark.parametrize("path", list(ROUTES))
def test_generated_and_spoiled_requests_get_an_answer_or_an_openai_4xx(
    fluido: httpx.Client, path: str
) -> None:
    route = ROUTES[path]

    @settings(
        max_examples=EXAMPLES[path],
        derandomize=True,  # the same cases every run: make fuzz is where new ones are searched for
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(route.cases())
    def one(case: Case) -> None:
        check(fluido, route, case)

    one()
    assert fluido.get("/health").status_code == 200


@pytest.mark.parametrize("path", list(ROUTES))
def test_every_hand_case_for_the_union_typed_fields(fluido: httpx.Client, path: str) -> None:
    route = ROUTES[path]
    for body in route.hand:
        check(fluido, route, Case("hand", path, orjson.dumps(body)))


def test_positive_control_the_oracle_catches_a_plain_text_500_and_a_cut_stream() -> None:
    plain = Reply(500, {"content-type": "text/plain"}, b"Internal Server Error")
    assert judge(plain, chat_success, openai_error)[0] == "5xx"
    text_400 = Reply(400, {"content-type": "text/plain"}, b"Bad Request")
    assert judge(text_400, chat_success, openai_error)[0] == "malformed"
    cut = Reply(200, {"content-type": "text/event-stream"}, b'data: {"object": "chat.completion.chunk"}\n\n')
    assert judge(cut, chat_success, openai_error)[0] == "stream_error"
    done_no_finish = cut.body + b"data: [DONE]\n\n"
    assert judge(Reply(200, cut.headers, done_no_finish), chat_success, openai_error)[0] == "stream_error"
    assert judge(Reply(0, {}, b"", hung=True), chat_success, openai_error)[0] == "hang"
