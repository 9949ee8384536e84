"""File batches and search options of the vector store API, through the official openai SDK."""

from __future__ import annotations

import io
from typing import Any

import openai
import pytest

from tests.fakes.vllm import FakeVLLM
from tests.middleware.rag.test_api import client, upload

FISH = {
    "salmon": "Salmon swim upstream to spawn in cold rivers.",
    "trout": "Trout are freshwater fish of cold mountain streams.",
    "goldfish": "Goldfish are kept in garden ponds and glass bowls.",
    "glorp": "The Quibble lagoon report lists glorpfish among its residents.",
    "bananas": "Bananas grow in tropical climates and are rich in potassium.",
}
# Dense search alone ranks the goldfish first for this question; BM25 knows only "lagoon" and "fish" words
# of the lagoon report and the trout, and fusing the two puts the lagoon report first.
QUESTION = "Which fish live in a lagoon?"


@pytest.fixture(scope="module")
def fish(rag_fluido: tuple[str, FakeVLLM]) -> dict[str, Any]:
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="fish")
    ids = {name: upload(c, f"{name}.txt", text) for name, text in FISH.items()}
    c.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=list(ids.values()))
    return {"id": vs.id, "files": ids}


def test_a_batch_lists_its_own_files_and_polls_to_completed(rag_fluido: tuple[str, FakeVLLM]) -> None:
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="batches")
    loose = upload(c, "loose.txt", "A file attached on its own, outside any batch.")
    c.vector_stores.files.create(vector_store_id=vs.id, file_id=loose)
    ids = [upload(c, f"n{i}.txt", f"Note {i} is about the colour {colour}.") for i, colour in enumerate("AB")]
    batch = c.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=ids)
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert batch.file_counts.completed == batch.file_counts.total == 2
    again = c.vector_stores.file_batches.retrieve(batch.id, vector_store_id=vs.id)
    assert (again.id, again.status, again.created_at) == (batch.id, "completed", batch.created_at)
    listed = list(c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id))
    assert sorted(f.id for f in listed) == sorted(ids)  # not the loose file
    assert all(f.status == "completed" and f.vector_store_id == vs.id for f in listed)
    done = c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id, filter="completed")
    assert sorted(f.id for f in done) == sorted(ids)
    failed = c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id, filter="failed")
    assert list(failed) == []
    first = c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id, limit=1, order="asc")
    assert len(first.data) == 1 and first.has_more
    # Removing a file from the store takes it out of its batch's listing too.
    c.vector_stores.files.delete(ids[0], vector_store_id=vs.id)
    remaining = c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id)
    assert [f.id for f in remaining] == [ids[1]]
    # A batch is done when it is created: cancelling returns it as it finished.
    assert c.vector_stores.file_batches.cancel(batch.id, vector_store_id=vs.id).status == "completed"
    c.vector_stores.delete(vs.id)


def test_upload_and_poll_uploads_then_batches(rag_fluido: tuple[str, FakeVLLM]) -> None:
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="uploaded")
    batch = c.vector_stores.file_batches.upload_and_poll(
        vector_store_id=vs.id,
        files=[("a.txt", io.BytesIO(b"Quokkas smile on Rottnest Island."), "text/plain"),
               ("b.txt", io.BytesIO(b"Kakapo parrots cannot fly."), "text/plain")],
    )  # fmt: skip
    assert batch.status == "completed" and batch.file_counts.total == 2
    listed = c.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id)
    assert {c.files.retrieve(f.id).filename for f in listed} == {"a.txt", "b.txt"}
    best = next(iter(c.vector_stores.search(vector_store_id=vs.id, query="flightless parrot")))
    assert best.filename == "b.txt"
    c.vector_stores.delete(vs.id)


def test_an_unknown_batch_or_one_of_another_store_is_a_404(
    rag_fluido: tuple[str, FakeVLLM], fish: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    other = c.vector_stores.create(name="other")
    batch = c.vector_stores.file_batches.create(vector_store_id=other.id, file_ids=[fish["files"]["salmon"]])
    for store_id, batch_id in [(other.id, "vsfb_nope"), (fish["id"], batch.id)]:
        with pytest.raises(openai.NotFoundError):
            c.vector_stores.file_batches.retrieve(batch_id, vector_store_id=store_id)
        with pytest.raises(openai.NotFoundError):
            list(c.vector_stores.file_batches.list_files(batch_id, vector_store_id=store_id))
    with pytest.raises(openai.BadRequestError) as caught:
        c.get(f"/vector_stores/{other.id}/file_batches/{batch.id}/files?filter=done", cast_to=object)
    assert caught.value.body["param"] == "filter"  # type: ignore[index]
    c.vector_stores.delete(other.id)


def names(page: Any) -> list[str]:
    return [r.filename.removesuffix(".txt") for r in page]


def test_the_default_rankers_fuse_and_none_orders_by_score(
    rag_fluido: tuple[str, FakeVLLM], fish: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    default = c.vector_stores.search(vector_store_id=fish["id"], query=QUESTION)
    assert names(default)[0] == "glorp"
    for ranker in ("auto", "default-2024-11-15"):
        ranked = c.vector_stores.search(
            vector_store_id=fish["id"], query=QUESTION, ranking_options={"ranker": ranker}
        )
        assert names(ranked) == names(default)
    plain = list(c.vector_stores.search(vector_store_id=fish["id"], query=QUESTION,
                                        ranking_options={"ranker": "none"}))  # fmt: skip
    assert names(plain)[0] == "goldfish"
    scores = [r.score for r in plain]
    assert scores == sorted(scores, reverse=True)
    # The fused order is not the order of the scores: this is what "none" changes.
    assert [r.score for r in default] != sorted((r.score for r in default), reverse=True)


def test_rewrite_query_is_accepted_and_the_query_searched_as_written(
    rag_fluido: tuple[str, FakeVLLM], fish: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    page = c.vector_stores.search(vector_store_id=fish["id"], query=QUESTION, rewrite_query=True)
    assert page.search_query == [QUESTION]  # type: ignore[attr-defined]
    assert names(page) == names(c.vector_stores.search(vector_store_id=fish["id"], query=QUESTION))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "x", "ranking_options": {"ranker": "bm25"}}, "ranking_options.ranker"),
        ({"query": "x", "ranking_options": "auto"}, "ranking_options"),
        ({"query": "x", "rewrite_query": "yes"}, "rewrite_query"),
    ],
)
def test_bad_search_options_are_a_400_naming_them(
    rag_fluido: tuple[str, FakeVLLM], fish: dict[str, Any], body: dict[str, Any], param: str
) -> None:
    url, _ = rag_fluido
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).post(f"/vector_stores/{fish['id']}/search", body=body, cast_to=object)
    assert caught.value.body["param"] == param  # type: ignore[index]
