"""BM25 rebuilds never hold queries up: while a rebuild runs, searches are answered with the snapshot
they have, and the new one replaces it whole when it is ready."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from middleware.rag import snapshot
from middleware.rag.backend import ChromaBackend
from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from middleware.rag.config import RagConfig
from middleware.rag.ingest import Document
from middleware.rag.retrieval import Retrieval
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm
from tests.support.wait import until

REACTOR = Document("reactor", "reactor.txt", "The Zorblax reactor is cooled by liquid helium at four kelvin.")
BANANAS = Document("bananas", "bananas.txt", "Bananas grow in tropical climates and are rich in potassium.")
GLORP = Document("glorp", "glorp.txt", "Glorpfish live only in the Quibble lagoon.")


class Gate:
    """Holds each BM25 build (``snapshot.assemble``) until the test lets it through: a rebuild as long as
    the test needs, without depending on the machine's speed."""

    def __init__(self) -> None:
        self.started = 0
        self._open = threading.Semaphore(0)
        self._real = snapshot.assemble

    def __call__(self, *args: Any) -> snapshot.Snapshot:
        self.started += 1
        assert self._open.acquire(timeout=60), "the test never let the build through"
        return self._real(*args)

    def let_through(self, builds: int = 1) -> None:
        self._open.release(builds)


@pytest.fixture(scope="module")
def parts() -> tuple[Any, Chunker]:
    return load_minilm(), Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(254, 48))


@pytest.fixture
async def retrieval(tmp_path: Path, parts: tuple[Any, Chunker]) -> AsyncIterator[Retrieval]:
    cfg = RagConfig(enabled=True, path=str(tmp_path / "rag"), timeout=2.0)
    r = Retrieval(cfg, ChromaBackend(cfg), Embedder(model=parts[0]), parts[1])
    yield r
    await r.close()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    held = Gate()
    monkeypatch.setattr(snapshot, "assemble", held)
    yield held
    held.let_through(100)  # never leave a worker waiting


async def found(r: Retrieval, store_id: str, query: str, mode: str) -> list[str]:
    return [p.file_id for p in await r.search([store_id], query, 3, mode=mode)]


async def test_searches_are_answered_with_the_old_index_while_rebuilds_run(
    retrieval: Retrieval, gate: Gate
) -> None:
    stores = [(await retrieval.create_store(f"kb{i}", {})).id for i in range(2)]
    gate.let_through(2)  # the first loads
    for store_id in stores:
        await retrieval.ingest(store_id, [REACTOR, BANANAS])
        assert await found(retrieval, store_id, "potassium bananas", "bm25") == ["bananas"]
    for store_id in stores:
        await retrieval.ingest(store_id, [GLORP])
    # Both stores' rebuilds are under way, more than the backend has workers for: the first one is held in
    # its build, the second waits for it.
    await until(lambda: gate.started == 3)
    for store_id in stores:
        for _ in range(5):
            # BM25 answers from the index it had: the new document is not in it yet ...
            assert await found(retrieval, store_id, "glorpfish Quibble lagoon", "bm25") == []
            assert await found(retrieval, store_id, "potassium bananas", "bm25") == ["bananas"]
            # ... while dense search, which reads Chroma, already finds it, and so does fused search.
            assert (await found(retrieval, store_id, "glorpfish Quibble lagoon", "dense"))[0] == "glorp"
            assert (await found(retrieval, store_id, "glorpfish Quibble lagoon", "fused"))[0] == "glorp"
    gate.let_through(2)

    async def bm25_has_glorp() -> bool:
        return all(
            [await found(retrieval, s, "glorpfish Quibble lagoon", "bm25") == ["glorp"] for s in stores]
        )

    await until(bm25_has_glorp, within=30)


async def test_a_document_deleted_during_a_rebuild_stays_out_when_that_rebuild_lands(
    retrieval: Retrieval, gate: Gate
) -> None:
    store_id = (await retrieval.create_store("kb", {})).id
    gate.let_through()  # the first load
    await retrieval.ingest(store_id, [REACTOR, BANANAS])
    assert await found(retrieval, store_id, "Zorblax helium", "bm25") == ["reactor"]
    await retrieval.ingest(store_id, [GLORP])
    await until(lambda: gate.started == 2)  # this rebuild read the store while it still held the reactor
    first = (await retrieval.snapshot(store_id)).generation
    await retrieval.remove(store_id, "reactor")
    assert await found(retrieval, store_id, "Zorblax helium", "bm25") == []  # masked at once
    gate.let_through()  # the rebuild that started before the deletion lands ...
    await until(lambda: gate.started == 3)  # ... and the one after it starts
    landed = await retrieval.snapshot(store_id)
    assert landed.generation not in ("", first) and "reactor" in {m["fluido_file"] for m in landed.metas}
    assert await found(retrieval, store_id, "Zorblax helium", "bm25") == []  # still out
    assert await found(retrieval, store_id, "glorpfish Quibble lagoon", "bm25") == ["glorp"]
    gate.let_through()

    async def settled() -> bool:
        return "reactor" not in {m["fluido_file"] for m in (await retrieval.snapshot(store_id)).metas}

    await until(settled, within=30)
    assert await found(retrieval, store_id, "Zorblax helium", "bm25") == []
