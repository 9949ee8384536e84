"""OpenAI's Vector Stores endpoints (``/v1/vector_stores/...``): stores, their files and file batches,
and search. Attaching a file chunks, embeds and indexes it within the request."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.routing import Route

from middleware.rag import catalog
from middleware.rag.api_base import ApiBase, file_of
from middleware.rag.chunking import ChunkSpec
from middleware.rag.filters import compile_filter
from middleware.rag.ingest import Document
from middleware.rag.objects import batch_object, deleted, page, search_page, store_file_object, store_object
from middleware.rag.params import attributes, chunking, paging, ranking, strings
from middleware.rag.retrieval import Retrieval
from middleware.rag.sources import HTML_SUFFIXES, html_text
from proxy.asgi import trace_of
from proxy.errors import InvalidRequest, NotFound

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
T = TypeVar("T")
Predicate = Callable[[Mapping[str, Any]], bool]


class StoresApi(ApiBase):
    """The vector store handlers."""

    async def create_store(self, request: Request, r: Retrieval) -> Any:
        body = await self._body(request)
        name, metadata = body.get("name") or "", body.get("metadata") or {}
        if not isinstance(name, str):
            raise InvalidRequest("'name' must be a string.", param="name")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise InvalidRequest("'metadata' must be an object of strings.", param="metadata")
        file_ids = strings(body.get("file_ids", []), "file_ids")
        spec = chunking(body.get("chunking_strategy"))
        store = await r.create_store(name, metadata)
        if file_ids:
            await self._attach(r, store.id, [(f, {}, spec) for f in file_ids])
        files = await r.backend.run(lambda b: catalog.get_store_files(b, store.id))
        return store_object(store, files)

    async def list_stores(self, request: Request, r: Retrieval) -> Any:
        trace = trace_of(request.scope)
        stores = [
            s
            for s in await r.backend.run(catalog.get_stores)
            if self.access.may_read(trace.key, s.id, s.name)
        ]
        items = []
        for s in stores:
            files = await r.backend.run(functools.partial(catalog.get_store_files, store_id=s.id))
            items.append(store_object(s, files))
        return page(items, *paging(request))

    async def get_store(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        return store_object(store, await r.backend.run(lambda b: catalog.get_store_files(b, store.id)))

    async def delete_store(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        await r.drop_store(store.id)
        return deleted(store.id, "vector_store.deleted")

    # --- a store's files ------------------------------------------------------------------------

    async def _attach(
        self, r: Retrieval, store_id: str, wanted: list[tuple[str, dict[str, Any], ChunkSpec | None]]
    ) -> list[catalog.StoreFile]:
        docs = []
        for file_id, attrs, spec in wanted:
            record, text = await file_of(r, file_id, with_text=True)
            if any(record.filename.lower().endswith(s) for s in HTML_SUFFIXES):
                text = html_text(text)
            docs.append(Document(file_id, record.filename, text, attrs, spec))
        return [record for record, _ in await r.ingest(store_id, docs)]

    async def create_store_file(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        body = await self._body(request)
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("'file_id' is required.", param="file_id")
        wanted = (file_id, attributes(body.get("attributes")), chunking(body.get("chunking_strategy")))
        return store_file_object((await self._attach(r, store.id, [wanted]))[0])

    async def create_batch(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        body = await self._body(request)
        shared, spec = attributes(body.get("attributes")), chunking(body.get("chunking_strategy"))
        wanted = [(f, shared, spec) for f in strings(body.get("file_ids", []), "file_ids")]
        for i, item in enumerate(body.get("files") or []):
            if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
                raise InvalidRequest(f"'files[{i}]' must be an object with a 'file_id'.", param="files")
            wanted.append(
                (
                    item["file_id"],
                    attributes(item.get("attributes")),
                    chunking(item.get("chunking_strategy")),
                )
            )
        if not wanted:
            raise InvalidRequest("'file_ids' or 'files' must name at least one file.", param="file_ids")
        await self._attach(r, store.id, wanted)
        file_ids = list(dict.fromkeys(f for f, _, _ in wanted))
        batch_id, created = await r.backend.run(lambda b: catalog.put_batch(b, store.id, file_ids, 0))
        return batch_object(batch_id, store.id, created, len(file_ids), 0)

    async def _batch(self, request: Request, r: Retrieval) -> tuple[str, dict[str, Any]]:
        store = await self._readable(request, r)
        batch_id = request.path_params["batch_id"]
        found = await r.backend.run(lambda b: catalog.get_batch(b, batch_id))
        if found is None or found["store"] != store.id:
            raise NotFound(f"No file batch with id '{batch_id}'.", param="batch_id")
        return batch_id, found

    async def get_batch(self, request: Request, r: Retrieval) -> Any:
        batch_id, found = await self._batch(request, r)
        return batch_object(
            batch_id, found["store"], int(found["created_at"]), int(found["total"]), int(found["failed"])
        )

    async def cancel_batch(self, request: Request, r: Retrieval) -> Any:
        # A batch is indexed within the request that creates it: by now there is nothing left to cancel,
        # so the batch is returned as it ended, as OpenAI does for a batch that already finished.
        return await self.get_batch(request, r)

    async def list_batch_files(self, request: Request, r: Retrieval) -> Any:
        _, found = await self._batch(request, r)
        status = request.query_params.get("filter")
        if status not in (None, *FILE_STATUSES):
            raise InvalidRequest(f"'filter' must be one of {', '.join(FILE_STATUSES)}.", param="filter")
        # The batch's files still in the store, all completed (indexing finished before the batch returned).
        files = await r.backend.run(lambda b: catalog.get_store_files(b, found["store"], found["files"]))
        shown = files if status in (None, "completed") else []
        return page([store_file_object(f) for f in shown], *paging(request))

    async def list_store_files(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        files = await r.backend.run(lambda b: catalog.get_store_files(b, store.id))
        return page([store_file_object(f) for f in files], *paging(request))

    async def get_store_file(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        file_id = request.path_params["file_id"]
        found = await r.backend.run(lambda b: catalog.get_store_files(b, store.id, [file_id]))
        if not found:
            raise NotFound(f"No file '{file_id}' in vector store '{store.id}'.", param="file_id")
        return store_file_object(found[0])

    async def delete_store_file(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        file_id = request.path_params["file_id"]
        if not await r.remove(store.id, file_id):
            raise NotFound(f"No file '{file_id}' in vector store '{store.id}'.", param="file_id")
        return deleted(file_id, "vector_store.file.deleted")

    async def search(self, request: Request, r: Retrieval) -> Any:
        # The store's check (a Chroma read, ~1 ms) runs while the body is read and the search begins with
        # the query's embedding, so it adds no time of its own; its answer still comes first: a store that is
        # missing, or that this key may not read, is a 404 whatever the body, and no result goes out.
        readable = settled(asyncio.ensure_future(self._readable(request, r)))
        try:
            query, k, predicate, mode, threshold = search_params(await self._body(request))
        except Exception:
            await readable
            raise
        except BaseException:
            readable.cancel()
            raise
        store_id = request.path_params["store_id"]
        found = settled(asyncio.ensure_future(r.search([store_id], query, k, predicate, mode, threshold)))
        try:
            await readable
        except BaseException:
            found.cancel()
            raise
        return search_page(query, await found)

    def store_routes(self) -> list[Route]:
        g, w = self._guard, functools.partial(self._guard, write=True)
        base = "/v1/vector_stores/{store_id}"
        return [
            Route("/v1/vector_stores", w(self.create_store), methods=["POST"]),
            Route("/v1/vector_stores", g(self.list_stores), methods=["GET"]),
            Route(base, g(self.get_store), methods=["GET"]),
            Route(base, w(self.delete_store), methods=["DELETE"]),
            Route(f"{base}/files", w(self.create_store_file), methods=["POST"]),
            Route(f"{base}/files", g(self.list_store_files), methods=["GET"]),
            Route(f"{base}/files/{{file_id}}", g(self.get_store_file), methods=["GET"]),
            Route(f"{base}/files/{{file_id}}", w(self.delete_store_file), methods=["DELETE"]),
            Route(f"{base}/file_batches", w(self.create_batch), methods=["POST"]),
            Route(f"{base}/file_batches/{{batch_id}}", g(self.get_batch), methods=["GET"]),
            Route(f"{base}/file_batches/{{batch_id}}/files", g(self.list_batch_files), methods=["GET"]),
            Route(f"{base}/file_batches/{{batch_id}}/cancel", w(self.cancel_batch), methods=["POST"]),
            Route(f"{base}/search", g(self.search), methods=["POST"]),
        ]


def search_params(body: dict[str, Any]) -> tuple[str, int, Predicate | None, str, float]:
    """A search request's query, ``max_num_results``, filter, mode and score threshold; else a 400."""
    query = body.get("query")
    if isinstance(query, list) and query and all(isinstance(q, str) for q in query):
        query = " ".join(query)
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("'query' must be a non-empty string or list of strings.", param="query")
    k = body.get("max_num_results", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
        raise InvalidRequest("'max_num_results' must be an integer from 1 to 50.", param="max_num_results")
    predicate = compile_filter(body["filters"]) if body.get("filters") is not None else None
    mode, threshold = ranking(body.get("ranking_options"))
    # Accepted, and the query is searched as written: no LLM sits in the search path to rewrite it, and
    # ``search_query`` in the reply says exactly what was searched.
    if not isinstance(body.get("rewrite_query", False), bool):
        raise InvalidRequest("'rewrite_query' must be a boolean.", param="rewrite_query")
    return query, k, predicate, mode, threshold


def settled(task: asyncio.Future[T]) -> asyncio.Future[T]:
    """The task, its failure marked as seen: one given up on (cancelled after the other failed) is not
    reported as an exception never retrieved. Awaiting it still raises."""
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task
