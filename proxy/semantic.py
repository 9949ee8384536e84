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

import asyncio
import contextlib
import hashlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
import numpy as np
from chromadb.config import Settings
from chromadb.errors import ChromaError, NotFoundError

from middleware.centroids import load_minilm
from proxy.cache_store import CacheUnavailable
from proxy.semantic_guard import same_specifics

T = TypeVar("T")


class Embedder:
    """all-MiniLM-L6-v2 sentence vectors, cached in memory and in SQLite, computed off the event loop."""

    def __init__(
        self,
        model: Any | None = None,
        cache_path: Path | None = None,
        max_entries: int = 10_000,
        ttl_seconds: float = 7 * 86400,
    ) -> None:
        self.model = model if model is not None else load_minilm()
        self.cache_path = cache_path
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._memory: OrderedDict[str, tuple[float, list[float]]] = OrderedDict()
        # One thread owns the model and the SQLite connection (a connection belongs to its thread).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-embed")
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._closed = False

    async def embed(self, text: str) -> list[float]:
        key = hashlib.sha256(text.encode()).hexdigest()
        known = self._memory.get(key)
        if known is not None and time.time() - known[0] < self.ttl_seconds:
            self._memory.move_to_end(key)
            return list(known[1])  # a copy: callers may not corrupt the cache
        loop = asyncio.get_running_loop()
        stamp, vector = await loop.run_in_executor(self._pool, self._load_or_embed, key, text)
        self._memory[key] = (stamp, vector)
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
        return list(vector)

    def _database(self) -> sqlite3.Connection | None:
        if self._db is None and self.cache_path is not None:
            try:
                self._db = sqlite3.connect(self.cache_path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")  # several workers may share the file
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, created REAL, vector BLOB)"
                )
                self._prune()
            except sqlite3.Error:
                self.cache_path = self._db = None  # an unusable file costs the disk cache, not the requests
        return self._db

    def _prune(self) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM embeddings WHERE created <= ?", (time.time() - self.ttl_seconds,))

    def _load_or_embed(self, key: str, text: str) -> tuple[float, list[float]]:
        now, db, row = time.time(), self._database(), None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):  # locked by another worker for too long: embed anyway
                row = db.execute("SELECT created, vector FROM embeddings WHERE key = ?", (key,)).fetchone()
        # The stored time, not now: TTL counts from the first embedding, across restarts.
        if row is not None and now - row[0] < self.ttl_seconds:
            return float(row[0]), np.frombuffer(row[1], dtype=np.float32).tolist()
        # float32 both ways, so a fresh vector and its cached copy are identical.
        vector = np.asarray(self.model.encode([text], normalize_embeddings=True)[0], dtype=np.float32)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", (key, now, vector.tobytes()))
                self._writes += 1
                if self._writes % 1000 == 0:  # expired rows would otherwise grow the file forever
                    self._prune()
        return now, vector.tolist()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
        self.cache_path = self._db = None  # an embedding still queued must not reopen it

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.submit(self._close_db)
            self._pool.shutdown(wait=True)


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
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-chroma")
        self._client: Any = None
        self._collection: Any = None

    def _connect(self) -> Any:
        """Blocking, in the worker: the client is made on first use, so start-up never waits on Chroma."""
        settings = Settings(anonymized_telemetry=False)
        if self._client is None:
            if self.host is not None:
                self._client = chromadb.HttpClient(host=self.host, port=self.port, settings=settings)
                for session in self._sessions():  # else a hung server would block the worker forever
                    session.timeout = httpx.Timeout(self.timeout)
            elif self.path is not None:
                self._client = chromadb.PersistentClient(path=self.path, settings=settings)
            else:
                self._client = chromadb.EphemeralClient(settings=settings)
        if self._collection is None:
            # embedding_function=None: we always pass vectors, and Chroma's default would download a model.
            self._collection = self._client.get_or_create_collection(
                self.name, configuration={"hnsw": self.hnsw}, embedding_function=None
            )
        return self._collection

    def _sessions(self) -> list[Any]:
        """The httpx sessions of Chroma 1.5's HTTP client and of its admin client, found through private
        attributes (harmlessly none if those change): Chroma opens them with timeout=None and never closes
        them."""
        owners = (self._client, getattr(self._client, "_admin_client", None))
        found = (getattr(getattr(owner, "_server", None), "_session", None) for owner in owners)
        return [session for session in found if isinstance(session, httpx.Client)]

    def _guarded(self, op: Callable[[Any], T]) -> T:
        """The one boundary where Chroma's exceptions become SemanticUnavailable, by type."""
        try:
            collection = self._connect()
        except (ChromaError, httpx.HTTPError, OSError, ValueError) as exc:
            # Client creation reports an unreachable server as a bare ValueError. A client that was made
            # is kept: httpx reconnects by itself once the server is back.
            raise SemanticUnavailable(str(exc)) from exc
        try:
            return op(collection)
        except Exception as exc:
            if isinstance(exc, NotFoundError):
                self._collection = None  # deleted behind our back (another purge): look it up again
            # The HTTP client raises a bare Exception for an error that is not Chroma's (a proxy's 502).
            if isinstance(exc, ChromaError | httpx.HTTPError | OSError) or type(exc) is Exception:
                raise SemanticUnavailable(str(exc)) from exc
            raise

    async def _run(self, op: Callable[[Any], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._guarded, op)
        try:
            # Client creation cannot be given a timeout, so the wait is bounded here as well.
            return await asyncio.wait_for(future, self.timeout * 2)
        except TimeoutError as exc:
            raise SemanticUnavailable("Chroma did not answer in time") from exc

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
            await self._run(self._recreate)

    def _recreate(self, collection: Any) -> None:
        self._client.delete_collection(self.name)
        self._collection = None
        self._connect()

    async def ping(self) -> None:
        await self._run(lambda c: self._client.heartbeat())

    def close(self) -> None:
        """Closes the client and the embedder too: the index owns the embedder it was given."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            sessions = self._sessions()
            self._client.close()  # releases the SQLite handles of an embedded Chroma
            for session in sessions:
                session.close()
        self.embedder.close()


def _where(where: dict[str, str]) -> dict[str, Any] | None:
    """All keys equal: Chroma wants one condition bare, several under $and, and none as no filter."""
    conditions = [{k: v} for k, v in where.items()]
    if len(conditions) > 1:
        return {"$and": conditions}
    return conditions[0] if conditions else None
