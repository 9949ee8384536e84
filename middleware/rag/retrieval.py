"""Hybrid retrieval over vector stores: dense (MiniLM in Chroma's HNSW) and BM25, fused by rank.

Writes go to Chroma (chunks, then the catalog, then a new store generation). Reads use this process's
snapshot of each store (``snapshot.py``), refreshed when the generation moves, whether this process or
another replica made the change: a background task polls the generations of the stores in use every
``refresh_seconds``. CPU work (chunking, embeddings, BM25) runs in one bounded pool, Chroma calls in the
backend's own, so neither blocks the event loop.

A passage's ``score`` is its cosine similarity to the query (0..1): comparable across queries, so a
threshold means something. The order is the fused one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import structlog

from middleware.rag import catalog, snapshot
from middleware.rag.backend import ChromaBackend, chunks_collection
from middleware.rag.chunking import Chunker
from middleware.rag.config import RagConfig
from middleware.rag.freshness import Snapshots, StoreMissing
from middleware.rag.fusion import rrf
from middleware.rag.ingest import Document, chunk_ids, plan
from middleware.rag.lexical import Analyzer, top
from middleware.rag.snapshot import Snapshot, attributes_of
from proxy.services.embedder import Embedder

T = TypeVar("T")
log = structlog.get_logger("fluido.rag")
MODES = ("fused", "dense", "bm25")
UPSERT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk."""

    store_id: str
    chunk_id: str
    file_id: str
    filename: str
    text: str
    attributes: dict[str, Any]
    score: float


class Retrieval:
    """The stores of one process: ingestion, deletion and search."""

    def __init__(self, cfg: RagConfig, backend: ChromaBackend, embedder: Embedder, chunker: Chunker) -> None:
        self.cfg = cfg
        self.backend = backend
        self.embedder = embedder
        self.chunker = chunker
        self.analyzer = Analyzer()
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fluido-rag")
        self.snapshots = Snapshots(cfg, backend, self.analyzer, self.cpu)

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
        return await self.backend.run(lambda b: catalog.put_store(b, name, metadata))

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
        snaps = [await self.snapshot(s) for s in store_ids]
        qvec = np.asarray(await self.embedder.embed(query), dtype=np.float32)
        depth = max(self.cfg.candidates, k)
        dense: list[tuple[str, str]] = []  # (store, chunk), best first
        cosine: dict[tuple[str, str], float] = {}
        lexical: list[tuple[float, tuple[str, str]]] = []
        for store_id, snap in zip(store_ids, snaps, strict=True):
            allowed = self._allowed(snap, predicate)
            if mode != "bm25":
                for cid, cos in await self._dense(store_id, snap, qvec, depth, allowed, predicate):
                    dense.append((store_id, cid))
                    cosine[(store_id, cid)] = cos
            if mode != "dense" and snap.bm25.size:
                scores = await self.cpu(snap.bm25.scores, self.analyzer, query)
                mask = snap.alive if allowed is None else snap.alive & allowed
                lexical += [(float(scores[r]), (store_id, snap.ids[r])) for r in top(scores, depth, mask)]
        if len(snaps) > 1:
            dense.sort(key=lambda key: cosine[key], reverse=True)
            lexical.sort(key=lambda pair: pair[0], reverse=True)
        ranked = self._order(mode, dense, [key for _, key in lexical])
        return await self._passages(ranked, snaps, store_ids, cosine, qvec, k, threshold)

    @staticmethod
    def _allowed(snap: Snapshot, predicate: Callable[[Mapping[str, Any]], bool] | None) -> np.ndarray | None:
        if predicate is None:
            return None
        return np.fromiter(
            (predicate(attributes_of(m)) for m in snap.metas), dtype=bool, count=len(snap.metas)
        )

    async def _dense(
        self,
        store_id: str,
        snap: Snapshot,
        qvec: np.ndarray,
        depth: int,
        allowed: np.ndarray | None,
        predicate: Callable[[Mapping[str, Any]], bool] | None,
    ) -> list[tuple[str, float]]:
        within = None if allowed is None else [snap.ids[i] for i in np.flatnonzero(allowed & snap.alive)]
        if within == [] or not snap.ids:
            return []

        def query(b: ChromaBackend) -> Any:
            from chromadb.errors import InternalError

            collection = b.collection(chunks_collection(store_id))
            n = depth if within is None else min(depth, len(within))
            try:
                return collection.query(
                    query_embeddings=[qvec], n_results=n, ids=within, include=["distances"]
                )
            except InternalError:
                if within is None:
                    raise
            # Chroma refuses a restriction naming a chunk it no longer has (another replica deleted it since
            # this snapshot): restrict to the chunks it still has.
            present = collection.get(ids=within, include=[])["ids"]
            if not present:
                return {"ids": [[]], "distances": [[]]}
            return collection.query(
                query_embeddings=[qvec], n_results=min(n, len(present)), ids=present, include=["distances"]
            )

        found = await self.backend.run(query)
        out = []
        for cid, distance in zip(found["ids"][0], found["distances"][0], strict=True):
            row = snap.rows.get(cid)
            if row is not None and not snap.alive[row]:
                continue
            if row is None and predicate is not None:
                continue  # newer than this snapshot: its attributes are not known here yet
            out.append((cid, max(0.0, min(1.0, 1.0 - float(distance)))))
        return out

    def _order(
        self, mode: str, dense: list[tuple[str, str]], lexical: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        if mode == "dense":
            return dense
        if mode == "bm25":
            return lexical
        return [
            key
            for key, _ in rrf([dense, lexical], [self.cfg.dense_weight, self.cfg.bm25_weight], self.cfg.rrf_k)
        ]

    async def _passages(
        self,
        ranked: list[tuple[str, str]],
        snaps: Sequence[Snapshot],
        store_ids: Sequence[str],
        cosine: dict[tuple[str, str], float],
        qvec: np.ndarray,
        k: int,
        threshold: float,
    ) -> list[Passage]:
        by_store = dict(zip(store_ids, snaps, strict=True))
        # Enough for the threshold to drop a few; deeper candidates would only be fetched to be cut.
        ranked = ranked[: k + max(10, k)]
        # Scores of lexical-only hits and texts of chunks newer than the snapshot come from Chroma.
        unscored: dict[str, list[str]] = {}
        unknown: dict[str, list[str]] = {}
        for store_id, cid in ranked:
            if (store_id, cid) not in cosine:
                unscored.setdefault(store_id, []).append(cid)
            if cid not in by_store[store_id].rows:
                unknown.setdefault(store_id, []).append(cid)
        if unscored or unknown:
            extra = await self.backend.run(lambda b: snapshot.score_and_fetch(b, qvec, unscored, unknown))
            cosine.update(extra[0])
            fetched = extra[1]
        else:
            fetched = {}
        out: list[Passage] = []
        for store_id, cid in ranked:
            score = cosine.get((store_id, cid), 0.0)
            if score < threshold:
                continue
            snap = by_store[store_id]
            row = snap.rows.get(cid)
            text, meta = (snap.texts[row], snap.metas[row]) if row is not None else fetched.get(cid, ("", {}))
            if row is None and cid not in fetched:
                continue
            out.append(
                Passage(store_id, cid, meta.get("fluido_file", ""), meta.get("fluido_name", ""), text,
                        attributes_of(meta), round(score, 6))
            )  # fmt: skip
            if len(out) == k:
                break
        return out

    async def close(self) -> None:
        await self.snapshots.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.backend.close()
        self.embedder.close()
