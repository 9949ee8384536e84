"""Vector stores of one process: creating and dropping stores, ingesting and removing documents, and
hybrid search (``search.py``) over them.

Writes go to Chroma (chunks, then the catalog, then a new store generation). Reads use this process's
snapshot of each store (``snapshot.py``), refreshed when the generation moves, whether this process or
another replica made the change: a background task polls the generations of the stores in use every
``refresh_seconds``. CPU work (chunking, embeddings, BM25) runs in one bounded pool, Chroma calls in the
backend's own, so neither blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from middleware.rag import catalog
from middleware.rag.backend import ChromaBackend, chunks_collection
from middleware.rag.chunking import Chunker
from middleware.rag.config import RagConfig
from middleware.rag.freshness import Snapshots, StoreMissing
from middleware.rag.ingest import Document, chunk_ids, plan
from middleware.rag.lexical import Analyzer
from middleware.rag.search import HybridSearch, Passage
from middleware.rag.snapshot import Snapshot
from proxy.services.embedder import Embedder

T = TypeVar("T")
log = structlog.get_logger("fluido.rag")
UPSERT_PAGE = 1000


class Retrieval:
    """The stores of one process: ingestion, deletion and search."""

    def __init__(self, cfg: RagConfig, backend: ChromaBackend, embedder: Embedder, chunker: Chunker) -> None:
        self.cfg = cfg
        self.backend = backend
        self.embedder = embedder
        self.chunker = chunker
        self.analyzer = Analyzer()
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fluido-rag")
        self.snapshots = Snapshots(cfg, backend, self.analyzer, self.cpu, embedder.space)
        self._same_space: set[str] = set()  # stores whose recorded embedding space is checked
        self._search = HybridSearch(cfg, backend, embedder, self.analyzer, self.snapshots, self.cpu)

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def start(self) -> None:
        self.snapshots.start()

    async def snapshot(self, store_id: str) -> Snapshot:
        return await self.snapshots.get(store_id)

    async def prepare(self, store_id: str) -> None:
        await self.snapshots.prepare(store_id)

    async def generation(self, store_id: str) -> str:
        return await self.snapshots.generation(store_id)

    # --- stores ---------------------------------------------------------------------------------

    async def resolve(self, id_or_name: str) -> catalog.StoreRecord:
        """A store by id, else by name (the newest of that name)."""
        found = await self.backend.run(lambda b: catalog.get_stores(b, [id_or_name]))
        if not found:
            named = [s for s in await self.backend.run(catalog.get_stores) if s.name == id_or_name]
            found = sorted(named, key=lambda s: s.created_at)[-1:]
        if not found:
            raise StoreMissing(id_or_name)
        return found[0]

    async def create_store(self, name: str, metadata: dict[str, Any]) -> catalog.StoreRecord:
        return await self.backend.run(lambda b: catalog.put_store(b, name, metadata, self.embedder.space))

    async def drop_store(self, store_id: str) -> None:
        def work(b: ChromaBackend) -> None:
            b.drop(chunks_collection(store_id))
            catalog.delete_store(b, store_id)

        await self.backend.run(work)
        self.snapshots.forget(store_id)

    # --- documents ------------------------------------------------------------------------------

    async def ingest(self, store_id: str, docs: Sequence[Document]) -> list[tuple[catalog.StoreFile, bool]]:
        """Adds or replaces documents; one whose content hash is unchanged is left alone. Returns each
        document's record and whether it changed."""
        if store_id not in self._same_space:
            found = await self.backend.run(lambda b: catalog.get_stores(b, [store_id]))
            if found:
                catalog.require_space(found[0], self.embedder.space)
                self._same_space.add(store_id)
        known = await self.backend.run(
            lambda b: {f.file_id: f for f in catalog.get_store_files(b, store_id, [d.file_id for d in docs])}
        )
        work = plan(store_id, docs, known, self.chunker.spec)
        changed = [p for p in work if p.changed]
        if not changed:
            return [(p.record, False) for p in work]
        pieces = await self.cpu(lambda: [self.chunker.split(p.doc.text, p.doc.spec) for p in changed])
        texts = [t for chunks in pieces for t in chunks]
        vectors = await self.embedder.embed_many(texts, self.cfg.batch_size) if texts else None
        ids, metas, stale, records = [], [], [], []
        for p, chunks in zip(changed, pieces, strict=True):
            record = p.with_chunks(len(chunks))
            records.append(record)
            ids += chunk_ids(record.file_id, record.content_hash, len(chunks))
            metas += [p.metadata()] * len(chunks)
            if (old := known.get(p.doc.file_id)) is not None:
                stale += chunk_ids(old.file_id, old.content_hash, old.chunks)

        def write(b: ChromaBackend) -> str:
            collection = b.collection(chunks_collection(store_id))
            for s in range(0, len(ids), UPSERT_PAGE):
                e = s + UPSERT_PAGE
                assert vectors is not None
                collection.upsert(
                    ids=ids[s:e], embeddings=vectors[s:e], documents=texts[s:e], metadatas=metas[s:e]
                )
            # New chunks first, then the old ones go: a reader never finds the document missing.
            for s in range(0, len(stale), UPSERT_PAGE):
                collection.delete(ids=stale[s : s + UPSERT_PAGE])
            catalog.put_store_files(b, records)
            return catalog.bump_generation(b, store_id)

        generation = await self.backend.run(write, wait=self.cfg.timeout * 10)
        if (snap := self.snapshots.held(store_id)) is not None:
            for record in records:
                snap.forget_file(record.file_id, keep=frozenset(ids))
        self.snapshots.moved(store_id, generation)
        by_id = {r.file_id: r for r in records}
        return [(by_id.get(p.record.file_id, p.record), p.changed) for p in work]

    async def remove(self, store_id: str, file_id: str) -> bool:
        """Removes a document's chunks from both indexes; False when it was not in the store."""

        def work(b: ChromaBackend) -> str | None:
            if not catalog.get_store_files(b, store_id, [file_id]):
                return None
            b.collection(chunks_collection(store_id)).delete(where={"fluido_file": file_id})
            catalog.delete_store_file(b, store_id, file_id)
            return catalog.bump_generation(b, store_id)

        generation = await self.backend.run(work)
        if generation is None:
            return False
        if (snap := self.snapshots.held(store_id)) is not None:
            snap.forget_file(file_id)  # out of BM25 at once, before the rebuild
        self.snapshots.moved(store_id, generation)
        return True

    # --- search ---------------------------------------------------------------------------------

    async def search(
        self,
        store_ids: Sequence[str],
        query: str,
        k: int,
        predicate: Callable[[Mapping[str, Any]], bool] | None = None,
        mode: str = "fused",
        threshold: float = 0.0,
    ) -> list[Passage]:
        """The ``k`` best passages of these stores for ``query``. Raises StoreMissing, RagUnavailable."""
        return await self._search.search(store_ids, query, k, predicate, mode, threshold)

    async def close(self) -> None:
        await self.snapshots.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.backend.close()
        self.embedder.close()
