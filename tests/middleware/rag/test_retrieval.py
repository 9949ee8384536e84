"""Retrieval against an embedded Chroma and the real MiniLM: ingestion, replacement, deletion, search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from middleware.rag import catalog
from middleware.rag.backend import ChromaBackend, chunks_collection
from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from middleware.rag.config import RagConfig
from middleware.rag.filters import compile_filter
from middleware.rag.freshness import StoreMissing
from middleware.rag.ingest import Document
from middleware.rag.retrieval import Retrieval
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm

DOCS = [
    Document(
        "reactor",
        "reactor.txt",
        "The Zorblax reactor is cooled by liquid helium at four kelvin.",
        {"team": "ops"},
    ),
    Document(
        "bananas",
        "bananas.txt",
        "Bananas grow in tropical climates and are rich in potassium.",
        {"team": "food"},
    ),
    Document(
        "marathon", "marathon.txt", "Training for a marathon takes months of long runs.", {"team": "sport"}
    ),
]


@pytest.fixture(scope="module")
def parts() -> tuple[Any, Chunker]:
    """The model (loaded once per module) and the chunker; each Retrieval gets an embedder of its own."""
    return load_minilm(), Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(254, 48))


def make(cfg: RagConfig, parts: tuple[Any, Chunker]) -> Retrieval:
    return Retrieval(cfg, ChromaBackend(cfg), Embedder(model=parts[0]), parts[1])


@pytest.fixture
async def retrieval(tmp_path: Path, parts: tuple[Any, Chunker]) -> AsyncIterator[Retrieval]:
    cfg = RagConfig(enabled=True, path=str(tmp_path / "rag"))
    r = make(cfg, parts)
    yield r
    await r.close()


async def chunk_ids(r: Retrieval, store_id: str) -> list[str]:
    return sorted(
        await r.backend.run(lambda b: b.collection(chunks_collection(store_id)).get(include=[])["ids"])
    )


async def found(r: Retrieval, store_id: str, query: str, mode: str) -> list[str]:
    return [p.file_id for p in await r.search([store_id], query, 3, mode=mode)]


async def found_soon(r: Retrieval, store_id: str, query: str, mode: str, wanted: str) -> None:
    """BM25 picks up new chunks when its background rebuild lands: poll for it, with a deadline."""
    deadline = time.monotonic() + 30
    while wanted not in await found(r, store_id, query, mode):
        assert time.monotonic() < deadline, f"{wanted} never found by {mode}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["dense", "bm25", "fused"])
async def test_each_retriever_finds_the_document_that_answers(retrieval: Retrieval, mode: str) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    assert (await found(retrieval, store.id, "what cools the Zorblax reactor?", mode))[0] == "reactor"
    assert (await found(retrieval, store.id, "potassium in bananas", mode))[0] == "bananas"


async def test_a_passage_carries_its_file_attributes_and_a_cosine_score(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    best = (await retrieval.search([store.id], "what cools the Zorblax reactor?", 3))[0]
    assert best.filename == "reactor.txt" and best.attributes == {"team": "ops"}
    assert 0.5 < best.score <= 1 and "helium" in best.text


async def test_a_passage_found_by_bm25_alone_is_scored_by_its_cosine_to_the_query(
    retrieval: Retrieval,
) -> None:
    """BM25 finds no cosine: it comes from the embeddings the snapshot holds, the same as Chroma's."""
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    query = "bananas and potassium"
    lexical = await retrieval.search([store.id], query, 3, mode="bm25")
    dense = {p.chunk_id: p.score for p in await retrieval.search([store.id], query, 3, mode="dense")}
    ids = [p.chunk_id for p in lexical]
    stored = await retrieval.backend.run(
        lambda b: b.collection(chunks_collection(store.id)).get(ids=ids, include=["embeddings"])
    )
    qvec = np.asarray(await retrieval.embedder.embed(query))
    cosine = {cid: float(np.dot(v, qvec)) for cid, v in zip(stored["ids"], stored["embeddings"], strict=True)}
    assert lexical[0].file_id == "bananas" and lexical[0].score > 0.5
    for p in lexical:
        assert p.score == pytest.approx(max(0.0, cosine[p.chunk_id]), abs=1e-5)
        assert p.score == pytest.approx(dense[p.chunk_id], abs=1e-4)  # Chroma's own distance, same vectors


async def test_a_store_of_another_embedding_space_is_neither_searched_nor_written(
    retrieval: Retrieval,
) -> None:
    ours = await retrieval.create_store("kb", {})
    await retrieval.ingest(ours.id, DOCS)
    assert (await found(retrieval, ours.id, "Zorblax reactor", "dense"))[0] == "reactor"  # positive control
    theirs = await retrieval.backend.run(lambda b: catalog.put_store(b, "other", {}, "some-other-model/cls"))
    for mode in ("dense", "bm25", "fused"):
        with pytest.raises(catalog.EmbeddingMismatch, match="some-other-model"):
            await retrieval.search([theirs.id], "Zorblax reactor", 3, mode=mode)
    with pytest.raises(catalog.EmbeddingMismatch):
        await retrieval.ingest(theirs.id, DOCS)
    assert (await retrieval.resolve(ours.id)).embedding == retrieval.embedder.space


async def test_reingesting_unchanged_documents_is_a_no_op(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    first = await retrieval.ingest(store.id, DOCS)
    ids, generation = await chunk_ids(retrieval, store.id), await retrieval.generation(store.id)
    again = await retrieval.ingest(store.id, DOCS)
    assert [changed for _, changed in first] == [True] * 3
    assert [changed for _, changed in again] == [False] * 3
    assert await chunk_ids(retrieval, store.id) == ids
    assert await retrieval.generation(store.id) == generation  # nothing moved: caches stay valid


async def test_a_changed_document_replaces_its_chunks_in_both_indexes(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    assert (await found(retrieval, store.id, "helium", "bm25"))[0] == "reactor"  # loads the snapshot
    before = await chunk_ids(retrieval, store.id)
    changed = Document(
        "reactor", "reactor.txt", "The Zorblax reactor is now cooled by liquid nitrogen.", {"team": "ops"}
    )
    ((_, was_changed),) = await retrieval.ingest(store.id, [changed])
    assert was_changed
    after = await chunk_ids(retrieval, store.id)
    assert len(after) == len(before) and set(after) != set(before)
    assert "reactor" not in await found(retrieval, store.id, "helium", "bm25")  # masked at once
    await found_soon(retrieval, store.id, "nitrogen", "bm25", "reactor")  # after the rebuild
    texts = [p.text for p in await retrieval.search([store.id], "Zorblax reactor coolant", 3, mode="dense")]
    assert any("nitrogen" in t for t in texts) and not any("helium" in t for t in texts)


async def test_removing_a_document_takes_it_out_of_both_indexes(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    assert (await found(retrieval, store.id, "Zorblax helium", "bm25"))[0] == "reactor"
    assert await retrieval.remove(store.id, "reactor") is True
    assert "reactor" not in await found(retrieval, store.id, "Zorblax helium", "bm25")
    assert "reactor" not in await found(retrieval, store.id, "Zorblax helium", "dense")
    assert not any(i.startswith("reactor:") for i in await chunk_ids(retrieval, store.id))
    assert await retrieval.remove(store.id, "reactor") is False


async def test_a_filter_restricts_both_retrievers(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    only_food = compile_filter({"type": "eq", "key": "team", "value": "food"})
    for mode in ("dense", "bm25", "fused"):
        hits = await retrieval.search([store.id], "Zorblax reactor bananas", 3, only_food, mode=mode)
        assert [p.file_id for p in hits] == ["bananas"], mode


async def test_a_score_threshold_drops_unrelated_passages(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    loose = await retrieval.search([store.id], "what cools the Zorblax reactor?", 3, threshold=0.0)
    strict = await retrieval.search([store.id], "what cools the Zorblax reactor?", 3, threshold=0.5)
    assert len(loose) == 3 and [p.file_id for p in strict] == ["reactor"]


async def test_a_static_chunking_strategy_sizes_the_chunks(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    long = Document("long", "long.txt", "Helium cools the reactor at night. " * 80, spec=ChunkSpec(100, 20))
    ((record, _),) = await retrieval.ingest(store.id, [long])
    assert record.chunks >= 4 and record.chunking == {
        "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}
    }  # fmt: skip


async def test_a_dropped_store_is_gone(retrieval: Retrieval) -> None:
    store = await retrieval.create_store("kb", {})
    await retrieval.ingest(store.id, DOCS)
    await retrieval.drop_store(store.id)
    with pytest.raises(StoreMissing):
        await retrieval.search([store.id], "helium", 3)
    with pytest.raises(StoreMissing):
        await retrieval.resolve("kb")


async def test_a_restart_loads_the_saved_bm25_index(tmp_path: Path, parts: tuple[Any, Chunker]) -> None:
    cfg = RagConfig(enabled=True, path=str(tmp_path / "rag"))
    first = make(cfg, parts)
    store = await first.create_store("kb", {})
    await first.ingest(store.id, DOCS)
    await first.prepare(store.id)
    before = await first.search([store.id], "potassium", 3, mode="bm25")
    await first.close()
    assert (tmp_path / "rag" / "bm25" / store.id / "chunks.json").exists()
    second = make(cfg, parts)
    try:
        assert (await found(second, store.id, "potassium", "bm25"))[0] == "bananas"
        assert await second.search([store.id], "potassium", 3, mode="bm25") == before  # embeddings too
    finally:
        await second.close()
