"""RAG injection through Fluido: what the upstream receives, what the client is told, and the cache."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.wait import wait_until

ADMIN = {"authorization": "Bearer sk-admin"}
QUESTION = "What cools the Zorblax reactor?"
REACTOR = "The Zorblax reactor is cooled by liquid helium at four kelvin."


@pytest.fixture(scope="module")
def handbook(rag_both: tuple[str, FakeVLLM, FakeOllama]) -> dict[str, str]:
    """The store the aliases read, with two documents."""
    url = rag_both[0]
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-admin", max_retries=0)
    vs = c.vector_stores.create(name="handbook")
    ids = {}
    for name, text in (
        ("reactor.txt", REACTOR),
        ("canteen.txt", "The canteen serves lentil soup every Tuesday."),
    ):
        ids[name] = c.files.create(
            file=(name, io.BytesIO(text.encode()), "text/plain"), purpose="assistants"
        ).id
        c.vector_stores.files.create(vector_store_id=vs.id, file_id=ids[name])
    return {"store": vs.id, **ids}


def ask(url: str, model: str, content: str | list[dict[str, Any]], **body: Any) -> httpx.Response:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    r = httpx.post(f"{url}/v1/chat/completions", headers=ADMIN, timeout=60,
                   json={"model": model, "messages": messages, **body})  # fmt: skip
    assert r.status_code == 200, r.text
    return r


def test_the_upstream_gets_numbered_sources_and_the_header_names_them(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    r = ask(url, "kb", QUESTION, temperature=0.5)
    sent = fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] and sent[1]["content"] == QUESTION
    assert r.headers["x-fluido-rag"] == "injected"
    sources = r.headers["x-fluido-rag-sources"].split(",")
    first, score = sources[0].split(":")
    assert first == handbook["reactor.txt"] and 0.3 <= float(score) <= 1
    assert int(r.headers["x-fluido-rag-passages"]) == len(sources)
    assert int(r.headers["x-fluido-rag-tokens"]) > 10
    # Each passage ends with its number, the n-th source of the header; the instruction comes last.
    numbers = "[1]" if len(sources) == 1 else f"[1] to [{len(sources)}]"
    assert sent[0]["content"].startswith("Sources:\n\n" + REACTOR + " [1]\n\n")
    instruction = f"Answer using the sources above. Cite each source you use by its number, {numbers}."
    assert sent[0]["content"].endswith("\n\n" + instruction)
    assert sent[0]["content"].count("\n\n") == len(sources) + 1


def test_a_streamed_request_gets_the_same_context(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    r = ask(url, "kb", QUESTION, stream=True)
    assert r.text.rstrip().endswith("data: [DONE]")
    assert REACTOR + " [1]" in fake.requests[-1]["messages"][0]["content"]
    assert r.headers["x-fluido-rag"] == "injected"


def test_an_existing_system_message_is_kept_and_extended(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    ask(url, "kb", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}])
    sent = fake.requests[-1]["messages"]
    assert (
        len(sent) == 2 and sent[0]["content"].startswith("You are terse.\n\n") and "[1]" in sent[0]["content"]
    )


def test_ollama_gets_the_context_as_a_system_message(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, _, ollama = rag_both
    r = ask(url, "kb_ollama", QUESTION)
    sent = ollama.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and REACTOR + " [1]" in sent[0]["content"]
    assert all(m["role"] != "tool" for m in sent)
    assert r.headers["x-fluido-rag"] == "injected"


def test_nothing_is_injected_when_no_passage_clears_the_minimum_score(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    question = "How many goals did the football team score last season?"
    r = ask(url, "kb", question)
    assert r.headers["x-fluido-rag"] == "none" and "x-fluido-rag-sources" not in r.headers
    assert fake.requests[-1]["messages"] == [{"role": "user", "content": question}]


def test_vector_store_ids_in_the_body_inject_and_never_reach_the_upstream(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-admin", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": QUESTION}],
        extra_body={"vector_store_ids": [handbook["store"]]},
    )  # fmt: skip
    assert raw.headers["x-fluido-rag"] == "injected"
    body = fake.requests[-1]
    assert "vector_store_ids" not in body and REACTOR + " [1]" in body["messages"][0]["content"]
    # The same alias without them: no context.
    plain = ask(url, "chat", QUESTION)
    assert "x-fluido-rag" not in plain.headers and fake.requests[-1]["messages"][0]["role"] == "user"


def test_bad_vector_store_ids_are_a_400(rag_both: tuple[str, FakeVLLM, FakeOllama]) -> None:
    url = rag_both[0]
    r = httpx.post(f"{url}/v1/chat/completions", headers=ADMIN, timeout=30,
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "vector_store_ids": "vs_1"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "vector_store_ids"


def test_a_key_cannot_inject_from_a_store_it_may_not_read(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    other = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-admin", max_retries=0).vector_stores.create(
        name="secret"
    )
    r = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": "Bearer sk-narrow"}, timeout=30,
                   json={"model": "chat", "messages": [{"role": "user", "content": QUESTION}],
                         "vector_store_ids": [other.id]})  # fmt: skip
    assert r.status_code == 200 and r.headers["x-fluido-rag"] == "store_missing"
    assert fake.requests[-1]["messages"][0]["role"] == "user"


def test_context_that_does_not_fit_the_window_is_left_out_and_the_user_text_kept(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    long_question = QUESTION + " " + "Please explain in detail. " * 25  # with max_tokens, fills 300 tokens
    r = ask(url, "tiny", long_question, max_tokens=100)
    assert r.headers["x-fluido-rag"] == "no_room"
    assert fake.requests[-1]["messages"] == [{"role": "user", "content": long_question}]
    # Positive control: a short question on the same alias fits.
    assert ask(url, "tiny", QUESTION, max_tokens=50).headers["x-fluido-rag"] == "injected"


def test_context_can_go_just_before_the_last_user_turn(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    turns = [
        {"role": "user", "content": "I work on the Zorblax reactor."},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "What cools it?"},  # alone, too vague: the query spans two turns
    ]
    r = ask(url, "late", turns)
    sent = fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "system", "user"]
    assert REACTOR + " [1]" in sent[2]["content"] and r.headers["x-fluido-rag"] == "injected"


def test_a_missing_store_is_no_context_and_no_error_and_ready_names_it(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    r = ask(url, "ghost", QUESTION)
    assert r.status_code == 200 and r.headers["x-fluido-rag"] == "store_missing"
    assert fake.requests[-1]["messages"] == [{"role": "user", "content": QUESTION}]
    counted = httpx.get(f"{url}/metrics").text
    assert 'fluido_rag_requests_total{model="ghost",result="store_missing"}' in counted
    wanted = {"ok": False, "error": "vector stores not found: no-such-store (models.ghost)"}

    def ready_names_only_the_ghost() -> dict[str, Any] | None:  # /ready reuses its checks for a moment
        ready: dict[str, Any] = httpx.get(f"{url}/ready").json()
        stores = ready["dependencies"]["rag_stores"]
        return ready if {k: stores.get(k) for k in wanted} == wanted else None

    ready = wait_until(ready_names_only_the_ghost, "/ready naming the missing store")
    assert ready["status"] == "ready" and ready["dependencies"]["rag_chroma"]["ok"]  # chat is still served


def test_the_cache_never_serves_an_answer_from_before_a_reindex(
    rag_both: tuple[str, FakeVLLM, FakeOllama], handbook: dict[str, str]
) -> None:
    url, fake, _ = rag_both
    question = "What does the canteen serve on Tuesdays?"
    first = ask(url, "kb", question, temperature=0)
    assert (
        first.headers["x-fluido-cache"] == "miss"
        and "lentil soup" in fake.requests[-1]["messages"][0]["content"]
    )
    calls = len(fake.requests)
    again = ask(url, "kb", question, temperature=0)
    assert again.headers["x-fluido-cache"] == "hit" and len(fake.requests) == calls
    assert again.headers["x-fluido-rag-version"] == first.headers["x-fluido-rag-version"]
    # Re-index: the canteen's menu changes.
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-admin", max_retries=0)
    c.files.delete(handbook["canteen.txt"])
    new = c.files.create(file=("canteen.txt", io.BytesIO(b"The canteen serves bean chili every Tuesday."),
                               "text/plain"), purpose="assistants")  # fmt: skip
    c.vector_stores.files.create(vector_store_id=handbook["store"], file_id=new.id)
    handbook["canteen.txt"] = new.id
    after = ask(url, "kb", question, temperature=0)
    assert after.headers["x-fluido-cache"] == "miss"
    assert after.headers["x-fluido-rag-version"] != first.headers["x-fluido-rag-version"]
    context = fake.requests[-1]["messages"][0]["content"]
    assert "bean chili" in context and "lentil soup" not in context


def test_rag_outcomes_are_counted_in_metrics(rag_both: tuple[str, FakeVLLM, FakeOllama]) -> None:
    url = rag_both[0]
    deadline = time.monotonic() + 10
    text = ""
    while "fluido_rag_requests_total" not in text:
        assert time.monotonic() < deadline
        text = httpx.get(f"{url}/metrics").text
    assert 'fluido_rag_requests_total{model="kb",result="injected"}' in text
    assert 'fluido_rag_requests_total{model="kb",result="none"}' in text
    assert "fluido_rag_retrieval_seconds_count" in text and "fluido_rag_tokens_added_total" in text
