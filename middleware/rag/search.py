"""Hybrid search over vector stores: dense (MiniLM in Chroma's HNSW) and BM25, fused by rank.

Reads use this process's snapshot of each store (``snapshot.py``, kept fresh by ``freshness.py``): BM25,
texts, and the embeddings that score lexical-only hits; chunks newer than a snapshot are fetched from
Chroma. A passage's ``score`` is its cosine similarity to the query (0..1): comparable across queries, so a
threshold means something. The order is the fused one.

Cost of a new query on this project's 2 cores (CPU per stage, SciFact's 10k chunks): embedding ~6 ms (ONNX
Runtime, ``proxy/services/query_model.py``), Chroma's HNSW query ~1.5-2 ms (nearly all Chroma's own
overhead per call: ``ef_search`` from 64 to 256 changed neither its time nor its top 100), BM25 ~0.2 ms,
run while the query is embedded. A search makes one Chroma call (the HTTP endpoint another, alongside it, to
check the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from middleware.rag import snapshot
from middleware.rag.backend import ChromaBackend, chunks_collection
from middleware.rag.config import RagConfig
from middleware.rag.freshness import Snapshots
from middleware.rag.fusion import rrf
from middleware.rag.lexical import Analyzer, top
from middleware.rag.snapshot import Snapshot, attributes_of
from proxy.services.embedder import Embedder

MODES = ("fused", "dense", "bm25")


async def no_hits() -> list[tuple[str, str]]:
    return []


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


class HybridSearch:
    """Search over the stores of one process; ``cpu`` runs CPU-bound work in retrieval's pool."""

    def __init__(
        self,
        cfg: RagConfig,
        backend: ChromaBackend,
        embedder: Embedder,
        analyzer: Analyzer,
        snapshots: Snapshots,
        cpu: Callable[..., Awaitable[Any]],
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.embedder = embedder
        self.analyzer = analyzer
        self.snapshots = snapshots
        self.cpu = cpu

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
        snaps = [await self.snapshots.get(s) for s in store_ids]
        allowed = [self._allowed(snap, predicate) for snap in snaps]
        depth = max(self.cfg.candidates, k)
        # BM25 needs no query vector: it runs in the CPU pool while the embedder's thread embeds the query.
        vector, lexical = await asyncio.gather(
            self.embedder.embed(query),
            self.cpu(self._lexical, store_ids, snaps, allowed, query, depth)
            if mode != "dense"
            else no_hits(),
        )
        qvec = np.asarray(vector, dtype=np.float32)
        dense: list[tuple[str, str]] = []  # (store, chunk), best first
        cosine: dict[tuple[str, str], float] = {}
        if mode != "bm25":
            found = await asyncio.gather(
                *(
                    self._dense(store_id, snap, qvec, depth, allow, predicate)
                    for store_id, snap, allow in zip(store_ids, snaps, allowed, strict=True)
                )
            )
            for store_id, hits in zip(store_ids, found, strict=True):
                for cid, cos in hits:
                    dense.append((store_id, cid))
                    cosine[(store_id, cid)] = cos
            if len(snaps) > 1:
                dense.sort(key=lambda key: cosine[key], reverse=True)
        ranked = self._order(mode, dense, lexical)
        return await self._passages(ranked, snaps, store_ids, cosine, qvec, k, threshold)

    def _lexical(
        self,
        store_ids: Sequence[str],
        snaps: Sequence[Snapshot],
        allowed: Sequence[np.ndarray | None],
        query: str,
        depth: int,
    ) -> list[tuple[str, str]]:
        """Blocking (CPU): BM25's ``depth`` best (store, chunk) of each store, best first overall."""
        found: list[tuple[float, tuple[str, str]]] = []
        for store_id, snap, allow in zip(store_ids, snaps, allowed, strict=True):
            if not snap.bm25.size:
                continue
            scores = snap.bm25.scores(self.analyzer, query)
            rows = top(scores, depth, snap.alive if allow is None else snap.alive & allow)
            found += zip(scores[rows].tolist(), [(store_id, snap.ids[r]) for r in rows], strict=True)
        if len(snaps) > 1:
            found.sort(key=lambda pair: pair[0], reverse=True)
        return [key for _, key in found]

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
        # Lexical-only hits are scored with the snapshot's embeddings; texts of chunks newer than the snapshot
        # (found by the dense search alone) come from Chroma.
        unknown: dict[str, list[str]] = {}
        for store_id, cid in ranked:
            row = by_store[store_id].rows.get(cid)
            if row is None:
                unknown.setdefault(store_id, []).append(cid)
            elif (store_id, cid) not in cosine:
                cos = float(by_store[store_id].vectors[row] @ qvec)
                cosine[(store_id, cid)] = max(0.0, min(1.0, cos))
        fetched: dict[str, tuple[str, dict[str, Any]]] = {}
        if unknown:

            def fetch(b: ChromaBackend) -> None:
                for store_id, ids in unknown.items():
                    fetched.update(snapshot.fetch_chunks(b, store_id, ids))

            await self.backend.run(fetch)
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
