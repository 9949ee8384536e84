"""Chroma for retrieval: a collection of chunks per store, and a catalog collection of records.

The catalog holds the stores, the uploaded files and which file is in which store. It lives in Chroma,
not on local disk, because replicas sharing a Chroma server must share it too; its records carry a
one-dimensional placeholder vector (Chroma needs one) and are only ever fetched by id or metadata.
The client and its error boundary are the shared ``proxy.services.chroma.ChromaClient``: every Chroma
failure arrives here as ``ChromaUnavailable`` (retrieval is skipped, writes answer 503).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from middleware.rag.config import RagConfig
from proxy.services.chroma import ChromaClient, ChromaUnavailable

T = TypeVar("T")
CATALOG = "fluido_rag_catalog"
PLACEHOLDER = [1.0]
RagUnavailable = ChromaUnavailable  # the name retrieval's callers catch


def chunks_collection(store_id: str) -> str:
    return f"fluido_rag_{store_id}"


class ChromaBackend:
    """Named collections on one client: cosine HNSW with the configured settings for chunks."""

    def __init__(self, cfg: RagConfig) -> None:
        self.cfg = cfg
        self.hnsw: dict[str, Any] = {
            "space": "cosine", "max_neighbors": cfg.hnsw_m, "ef_construction": cfg.hnsw_construction_ef,
            "ef_search": cfg.hnsw_search_ef,
        }  # fmt: skip
        # Two workers: a long write (a big ingest) does not hold every search behind it.
        self.chroma = ChromaClient(
            path=None if cfg.host else cfg.path, host=cfg.host or None, port=cfg.port, timeout=cfg.timeout,
            workers=2,
        )  # fmt: skip
        self._collections: dict[str, Any] = {}

    def collection(self, name: str) -> Any:
        """Blocking, in the worker: the collection, created if missing."""
        known = self._collections.get(name)
        if known is None:
            config = {"hnsw": self.hnsw if name != CATALOG else {"space": "l2"}}
            # embedding_function=None: we always pass vectors, and Chroma's default would download a model.
            known = self.chroma.connect().get_or_create_collection(
                name, configuration=config, embedding_function=None
            )
            self._collections[name] = known
        return known

    def drop(self, name: str) -> None:
        """Blocking: deletes a collection; one already gone is not an error."""
        from chromadb.errors import NotFoundError

        self._collections.pop(name, None)
        with contextlib.suppress(NotFoundError):
            self.chroma.connect().delete_collection(name)

    async def run(self, op: Callable[[ChromaBackend], T], wait: float | None = None) -> T:
        return await self.chroma.run(lambda _: op(self), wait, on_not_found=self._collections.clear)

    async def ping(self) -> None:
        await self.chroma.ping()

    def close(self) -> None:
        self.chroma.close()
