"""OpenAI's Files and Vector Stores endpoints, so the official SDK ingests and searches unchanged.

Attaching a file chunks, embeds and indexes it within the request, so a vector store file is
``completed`` when the call returns (the SDK's ``create_and_poll`` finds it done at once). Route handlers
parse, check access, call ``Retrieval`` and render; errors are OpenAI-shaped (``proxy/errors.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from middleware.rag import catalog
from middleware.rag.access import Access
from middleware.rag.backend import RagUnavailable
from middleware.rag.catalog import StoreRecord
from middleware.rag.chunking import ChunkSpec
from middleware.rag.filters import compile_filter
from middleware.rag.freshness import StoreMissing
from middleware.rag.ingest import Document
from middleware.rag.objects import (
    batch_object,
    deleted,
    file_object,
    page,
    search_page,
    store_file_object,
    store_object,
)
from middleware.rag.params import attributes, chunking, paging, strings
from middleware.rag.retrieval import Retrieval
from middleware.rag.sources import HTML_SUFFIXES, html_text
from proxy.asgi import BodyLimits, trace_of
from proxy.errors import FluidoError, InvalidRequest, NotFound, PermissionDenied, StoreUnavailable, render
from proxy.parsing import decode_object

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(request: Request, error: FluidoError) -> Response:
    trace = trace_of(request.scope)
    trace.error_type, trace.error_code = error.type, error.code or ""
    return Response(
        render(error), status_code=error.status, media_type="application/json", headers=error.headers()
    )


class RagApi:
    """The handlers; ``retrieval`` is None until the lifespan has loaded the embedding model."""

    def __init__(self, access: Access, limits: BodyLimits, max_file_bytes: int) -> None:
        self.access = access
        self.limits = limits
        self.max_file_bytes = max_file_bytes
        self.retrieval: Retrieval | None = None

    def _guard(self, fn: Callable[[Request, Retrieval], Awaitable[Any]], write: bool = False) -> Endpoint:
        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            trace = trace_of(request.scope)
            try:
                if write and not self.access.may_write(trace.key, trace.client):
                    raise PermissionDenied("Changing files and vector stores needs an admin API key.")
                if self.retrieval is None:
                    raise StoreUnavailable("Vector stores are starting (the embedding model is loading).")
                result = await fn(request, self.retrieval)
            except FluidoError as exc:
                return _error(request, exc)
            except RagUnavailable as exc:
                return _error(request, StoreUnavailable(f"The vector store backend is unavailable: {exc}"))
            except StoreMissing as exc:
                return _error(request, NotFound(f"No vector store with id '{exc}'.", param="vector_store_id"))
            return result if isinstance(result, Response) else _json(result)

        return endpoint

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await self.limits.read(request.scope, request.receive)
        return decode_object(body) if body.strip() else {}

    async def _readable(self, request: Request, r: Retrieval) -> StoreRecord:
        store_id = request.path_params["store_id"]
        found = await r.backend.run(lambda b: catalog.get_stores(b, [store_id]))
        trace = trace_of(request.scope)
        if not found or not self.access.may_read(trace.key, found[0].id, found[0].name):
            raise NotFound(f"No vector store with id '{store_id}'.", param="vector_store_id")
        return found[0]

    # --- files ----------------------------------------------------------------------------------

    async def create_file(self, request: Request, r: Retrieval) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_file_bytes:
            raise InvalidRequest(f"The file exceeds the limit of {self.max_file_bytes} bytes.", param="file")
        async with request.form(max_files=1, max_fields=8) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if upload is None or isinstance(upload, str):
                raise InvalidRequest("A 'file' part is required (multipart/form-data).", param="file")
            if not isinstance(purpose, str) or not purpose:
                raise InvalidRequest("'purpose' is required.", param="purpose")
            raw = await upload.read(self.max_file_bytes + 1)
            filename = upload.filename or "upload.txt"
        if len(raw) > self.max_file_bytes:
            raise InvalidRequest(f"The file exceeds the limit of {self.max_file_bytes} bytes.", param="file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(
                "Only UTF-8 text files (txt, md, html, ...) can be uploaded.", param="file"
            ) from None
        record = await r.backend.run(lambda b: catalog.put_file(b, filename, purpose, text, len(raw)))
        return file_object(record)

    async def list_files(self, request: Request, r: Retrieval) -> Any:
        files = await r.backend.run(catalog.list_files)
        purpose = request.query_params.get("purpose")
        items = [file_object(f) for f in files if purpose in (None, f.purpose)]
        return page(items, *paging(request, 10_000))

    async def get_file(self, request: Request, r: Retrieval) -> Any:
        return file_object((await _file(r, request.path_params["file_id"]))[0])

    async def file_content(self, request: Request, r: Retrieval) -> Any:
        _, text = await _file(r, request.path_params["file_id"], with_text=True)
        return Response(text.encode(), media_type="text/plain; charset=utf-8")

    async def delete_file(self, request: Request, r: Retrieval) -> Any:
        file_id = request.path_params["file_id"]
        await _file(r, file_id)
        # Deleting a file takes it out of every store that holds it, from both indexes.
        for store_id in await r.backend.run(lambda b: catalog.stores_with_file(b, file_id)):
            await r.remove(store_id, file_id)
        await r.backend.run(lambda b: catalog.delete_file(b, file_id))
        return deleted(file_id, "file")

    # --- stores ---------------------------------------------------------------------------------

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
            record, text = await _file(r, file_id, with_text=True)
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
        batch_id, created = await r.backend.run(lambda b: catalog.put_batch(b, store.id, len(wanted), 0))
        return batch_object(batch_id, store.id, created, len(wanted), 0)

    async def get_batch(self, request: Request, r: Retrieval) -> Any:
        store = await self._readable(request, r)
        batch_id = request.path_params["batch_id"]
        found = await r.backend.run(lambda b: catalog.get_batch(b, batch_id))
        if found is None or found["store"] != store.id:
            raise NotFound(f"No file batch with id '{batch_id}'.", param="batch_id")
        return batch_object(
            batch_id, store.id, int(found["created_at"]), int(found["total"]), int(found["failed"])
        )

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
        store = await self._readable(request, r)
        body = await self._body(request)
        query = body.get("query")
        if isinstance(query, list) and query and all(isinstance(q, str) for q in query):
            query = " ".join(query)
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequest("'query' must be a non-empty string or list of strings.", param="query")
        k = body.get("max_num_results", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
            raise InvalidRequest(
                "'max_num_results' must be an integer from 1 to 50.", param="max_num_results"
            )
        predicate = compile_filter(body["filters"]) if body.get("filters") is not None else None
        ranking = body.get("ranking_options") or {}
        threshold = ranking.get("score_threshold", 0.0) if isinstance(ranking, dict) else None
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise InvalidRequest(
                "'ranking_options.score_threshold' must be from 0 to 1.", param="ranking_options"
            )
        found = await r.search([store.id], query, k, predicate, threshold=float(threshold))
        return search_page(query, found)

    def routes(self) -> list[Route]:
        g, w = self._guard, functools.partial(self._guard, write=True)
        base = "/v1/vector_stores/{store_id}"
        return [
            Route("/v1/files", w(self.create_file), methods=["POST"]),
            Route("/v1/files", g(self.list_files), methods=["GET"]),
            Route("/v1/files/{file_id}", g(self.get_file), methods=["GET"]),
            Route("/v1/files/{file_id}", w(self.delete_file), methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", g(self.file_content), methods=["GET"]),
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
            Route(f"{base}/search", g(self.search), methods=["POST"]),
        ]


async def _file(r: Retrieval, file_id: str, with_text: bool = False) -> tuple[catalog.FileRecord, str]:
    found = await r.backend.run(lambda b: catalog.get_file(b, file_id, with_text))
    if found is None:
        raise NotFound(f"No file with id '{file_id}'.", param="file_id")
    return found
