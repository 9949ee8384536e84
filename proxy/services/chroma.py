"""Chroma, embedded (a directory, or in memory) or a server over HTTP, behind one boundary.

Every operation runs in a worker thread (the client blocks) with a bounded wait, and Chroma's exceptions
become ``ChromaUnavailable`` here and nowhere else. ``ChromaClient`` is the client (RAG uses several
collections through it); ``ChromaCollection`` is one collection on a client of its own (the semantic
cache). The client is made on first use, so start-up never waits on Chroma; chromadb itself (about a
second to import) is imported then too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class ChromaUnavailable(Exception):
    """Chroma could not be reached or failed."""


class ChromaClient:
    """One client, embedded (a directory, or in memory) or a server: ``run(op)`` calls ``op(client)`` in
    the worker pool, bounded in time, with Chroma's exceptions translated."""

    def __init__(
        self,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 8000,
        timeout: float = 5.0,
        workers: int = 1,
    ) -> None:
        self.path, self.host, self.port = path, host, port
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fluido-chroma")
        self._client: Any = None

    def connect(self) -> Any:
        """Blocking, in the worker: the client is made on first use, so start-up never waits on Chroma."""
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            if self.host is not None:
                self._client = chromadb.HttpClient(host=self.host, port=self.port, settings=settings)
                for session in self._sessions():  # else a hung server would block the worker forever
                    session.timeout = httpx.Timeout(self.timeout)
            elif self.path is not None:
                self._client = chromadb.PersistentClient(path=self.path, settings=settings)
            else:
                self._client = chromadb.EphemeralClient(settings=settings)
        return self._client

    def _sessions(self) -> list[Any]:
        """The httpx sessions of Chroma 1.5's HTTP client and of its admin client, found through private
        attributes (harmlessly none if those change): Chroma opens them with timeout=None and never closes
        them."""
        owners = (self._client, getattr(self._client, "_admin_client", None))
        found = (getattr(getattr(owner, "_server", None), "_session", None) for owner in owners)
        return [session for session in found if isinstance(session, httpx.Client)]

    def guarded(self, op: Callable[[Any], T], on_not_found: Callable[[], None] | None = None) -> T:
        """The one boundary where Chroma's exceptions become ChromaUnavailable, by type."""
        from chromadb.errors import ChromaError, NotFoundError

        try:
            client = self.connect()
        except (ChromaError, httpx.HTTPError, OSError, ValueError) as exc:
            # Client creation reports an unreachable server as a bare ValueError. A client that was made
            # is kept: httpx reconnects by itself once the server is back.
            raise ChromaUnavailable(str(exc)) from exc
        try:
            return op(client)
        except Exception as exc:
            if isinstance(exc, NotFoundError) and on_not_found is not None:
                on_not_found()  # a collection deleted behind our back: the caller looks it up again
            # The HTTP client raises a bare Exception for an error that is not Chroma's (a proxy's 502).
            if isinstance(exc, ChromaError | httpx.HTTPError | OSError) or type(exc) is Exception:
                raise ChromaUnavailable(str(exc) or type(exc).__name__) from exc
            raise

    async def run(
        self,
        op: Callable[[Any], T],
        wait: float | None = None,
        on_not_found: Callable[[], None] | None = None,
    ) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.guarded, op, on_not_found)
        try:
            # Client creation cannot be given a timeout, so the wait is bounded here as well.
            return await asyncio.wait_for(future, wait or self.timeout * 2)
        except TimeoutError as exc:
            raise ChromaUnavailable("Chroma did not answer in time") from exc

    async def ping(self) -> None:
        await self.run(lambda client: client.heartbeat())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            sessions = self._sessions()
            self._client.close()  # releases the SQLite handles of an embedded Chroma
            for session in sessions:
                session.close()


class ChromaCollection:
    """One collection: ``run(op)`` calls ``op(collection)`` in the worker."""

    def __init__(
        self,
        name: str,
        configuration: dict[str, Any],
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 8000,
        timeout: float = 5.0,
    ) -> None:
        self.name, self.configuration = name, configuration
        self.chroma = ChromaClient(path=path, host=host, port=port, timeout=timeout)
        self._collection: Any = None

    def _collection_of(self, client: Any) -> Any:
        if self._collection is None:
            # embedding_function=None: we always pass vectors, and Chroma's default would download a model.
            self._collection = client.get_or_create_collection(
                self.name, configuration=self.configuration, embedding_function=None
            )
        return self._collection

    def _forget(self) -> None:
        self._collection = None

    async def run(self, op: Callable[[Any], T]) -> T:
        return await self.chroma.run(
            lambda client: op(self._collection_of(client)), on_not_found=self._forget
        )

    def recreate(self, collection: Any) -> None:
        """An op: drop the collection and make it again, empty."""
        client = self.chroma.connect()
        client.delete_collection(self.name)
        self._collection = None
        self._collection_of(client)

    def heartbeat(self, collection: Any) -> Any:
        """An op: the server's (or the embedded client's) heartbeat."""
        return self.chroma.connect().heartbeat()

    def close(self) -> None:
        self.chroma.close()
