"""Chroma for retrieval: a collection of chunks per store, and a catalog collection of records.

The catalog holds the stores, the uploaded files and which file is in which store. It lives in Chroma,
not on local disk, because replicas sharing a Chroma server must share it too; its records carry a
one-dimensional placeholder vector (Chroma needs one) and are only ever fetched by id or metadata.

Errors::

    RagUnavailable   Chroma could not be reached, failed or timed out: retrieval is skipped, writes fail 503
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from middleware.rag.config import RagConfig

T = TypeVar("T")
CATALOG = "fluido_rag_catalog"
PLACEHOLDER = [1.0]


class RagUnavailable(Exception):
    """Chroma could not be reached or failed."""


def chunks_collection(store_id: str) -> str:
    return f"fluido_rag_{store_id}"


class ChromaBackend:
    """An embedded (``path``) or server (``host``) Chroma, called from a small thread pool, with every
    foreign exception turned into RagUnavailable at one place."""

    def __init__(self, cfg: RagConfig) -> None:
        self.cfg = cfg
        self.hnsw: dict[str, Any] = {
            "space": "cosine", "max_neighbors": cfg.hnsw_m, "ef_construction": cfg.hnsw_construction_ef,
            "ef_search": cfg.hnsw_search_ef,
        }  # fmt: skip
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fluido-rag-chroma")
        self._client: Any = None
        self._collections: dict[str, Any] = {}

    def _connect(self) -> Any:
        """Blocking, in the pool: the client is made on first use, so start-up never waits on Chroma."""
        if self._client is None:
            import chromadb  # about a second to import: only once retrieval is used
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            if self.cfg.host:
                self._client = chromadb.HttpClient(host=self.cfg.host, port=self.cfg.port, settings=settings)
                import httpx

                for session in self._sessions():  # else a hung server would block a worker forever
                    session.timeout = httpx.Timeout(self.cfg.timeout)
            else:
                self._client = chromadb.PersistentClient(path=self.cfg.path, settings=settings)
        return self._client

    def _sessions(self) -> list[Any]:
        """Chroma's HTTP client sessions, reached through private attributes (none if those change)."""
        import httpx

        owners = (self._client, getattr(self._client, "_admin_client", None))
        found = (getattr(getattr(owner, "_server", None), "_session", None) for owner in owners)
        return [session for session in found if isinstance(session, httpx.Client)]

    def collection(self, name: str, create: bool = True) -> Any:
        """Blocking. A chunks collection is cosine HNSW with the configured settings."""
        known = self._collections.get(name)
        if known is None:
            client = self._connect()
            if create:
                config = {"hnsw": self.hnsw if name != CATALOG else {"space": "l2"}}
                known = client.get_or_create_collection(name, configuration=config, embedding_function=None)
            else:
                known = client.get_collection(name, embedding_function=None)
            self._collections[name] = known
        return known

    def drop(self, name: str) -> None:
        """Blocking: deletes a collection; one already gone is not an error."""
        from chromadb.errors import NotFoundError

        self._collections.pop(name, None)
        with contextlib.suppress(NotFoundError):
            self._connect().delete_collection(name)

    def _guarded(self, op: Callable[[ChromaBackend], T]) -> T:
        import httpx
        from chromadb.errors import ChromaError, NotFoundError

        try:
            return op(self)
        except Exception as exc:
            if isinstance(exc, NotFoundError):
                self._collections.clear()  # deleted behind our back (another replica): look up again
            # Client creation reports an unreachable server as a bare ValueError; the HTTP client raises
            # a bare Exception for an error that is not Chroma's own (a proxy's 502).
            foreign = (ChromaError, httpx.HTTPError, OSError)
            if isinstance(exc, foreign) or type(exc) in (Exception, ValueError):
                raise RagUnavailable(str(exc) or type(exc).__name__) from exc
            raise

    async def run(self, op: Callable[[ChromaBackend], T], wait: float | None = None) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._guarded, op)
        try:
            # Client creation cannot be given a timeout, so the wait is bounded here as well.
            return await asyncio.wait_for(future, wait or self.cfg.timeout * 2)
        except TimeoutError as exc:
            raise RagUnavailable("Chroma did not answer in time") from exc

    async def ping(self) -> None:
        await self.run(lambda b: b._connect().heartbeat())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            sessions = self._sessions()
            self._client.close() if hasattr(self._client, "close") else None
            for session in sessions:
                session.close()
