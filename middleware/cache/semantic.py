"""The semantic side of the response cache: question embeddings in Chroma, mapped to exact cache keys.

The cached value lives elsewhere under its exact key; this index only answers "which earlier question is
this one a paraphrase of?". A candidate must clear a similarity threshold and ``same_specifics``, because a
near-miss answering a different question (2+2 vs 2+3, Paris vs Lyon) is worse than a cache miss. The guard
cannot see everything: word order without names or numbers ("string to integer" vs "integer to string")
is left to the threshold, which does not catch it.

Importing this module imports chromadb (about a second): import it only when the semantic cache is on.

Errors::

    SemanticUnavailable   Chroma could not be reached or failed; the caller treats it as a miss
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from middleware.cache.guard import same_specifics
from middleware.cache.store import CacheUnavailable
from proxy.services.chroma import ChromaCollection, ChromaUnavailable
from proxy.services.embedder import Embedder

T = TypeVar("T")


class SemanticUnavailable(CacheUnavailable):
    """Chroma could not be reached or failed; treat it as a cache miss."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An earlier question close enough to answer this one."""

    key: str
    similarity: float
    text: str


class SemanticIndex:
    """Cached questions in a Chroma collection: embedding -> exact cache key, filtered by metadata."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 8000,
        collection: str = "fluido_semantic_cache",
        space: str = "cosine",
        m: int = 16,
        construction_ef: int = 100,
        search_ef: int = 64,
        timeout: float = 5.0,
    ) -> None:
        if space not in ("cosine", "l2", "ip"):
            raise ValueError(f"unknown space {space!r}")
        self.embedder = embedder
        self.path, self.host, self.port, self.name, self.space = path, host, port, collection, space
        self.hnsw: dict[str, Any] = {
            "space": space, "max_neighbors": m, "ef_construction": construction_ef, "ef_search": search_ef,
        }  # fmt: skip
        self.chroma = ChromaCollection(
            collection, {"hnsw": self.hnsw}, path=path, host=host, port=port, timeout=timeout
        )

    async def _run(self, op: Callable[[Any], T]) -> T:
        try:
            return await self.chroma.run(op)
        except ChromaUnavailable as exc:
            raise SemanticUnavailable(str(exc)) from exc

    async def search(
        self, text: str, where: dict[str, str], threshold: float, limit: int = 3
    ) -> list[Candidate]:
        vector = await self.embedder.embed(text)
        found = await self._run(
            lambda c: c.query(
                query_embeddings=[vector],
                n_results=limit,
                where=_where(where),
                include=["documents", "distances"],
            )
        )
        out = []
        for key, document, distance in zip(
            found["ids"][0], found["documents"][0], found["distances"][0], strict=True
        ):
            # Unit vectors: Chroma's l2 is the squared distance, 2 - 2cos; cosine and ip give 1 - cos.
            similarity = min(1.0, 1.0 - distance / 2 if self.space == "l2" else 1.0 - distance)
            if similarity >= threshold and same_specifics(text, document):
                out.append(Candidate(key, float(similarity), document))
        return sorted(out, key=lambda c: c.similarity, reverse=True)

    async def add(self, key: str, text: str, metadata: dict[str, str]) -> None:
        vector = await self.embedder.embed(text)
        await self._run(
            lambda c: c.upsert(ids=[key], embeddings=[vector], documents=[text], metadatas=[metadata or None])
        )

    async def remove(self, key: str) -> None:
        await self._run(lambda c: c.delete(ids=[key]))

    async def purge(self, namespace: str | None) -> None:
        """Forget the entries whose ``namespace`` metadata is ``namespace``; None forgets everything."""
        if namespace is not None:
            await self._run(lambda c: c.delete(where={"namespace": namespace}))
        else:
            await self._run(self.chroma.recreate)

    async def ping(self) -> None:
        await self._run(self.chroma.heartbeat)

    def close(self) -> None:
        """Closes the client and the embedder too: the index owns the embedder it was given."""
        self.chroma.close()
        self.embedder.close()


def _where(where: dict[str, str]) -> dict[str, Any] | None:
    """All keys equal: Chroma wants one condition bare, several under $and, and none as no filter."""
    conditions = [{k: v} for k, v in where.items()]
    if len(conditions) > 1:
        return {"$and": conditions}
    return conditions[0] if conditions else None
