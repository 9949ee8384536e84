"""What the Files and Vector Stores handlers share: the guard that checks access and readiness and maps
errors to OpenAI-shaped replies, body parsing, and looking up a readable store or a file."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from middleware.rag import catalog
from middleware.rag.access import Access
from middleware.rag.backend import RagUnavailable
from middleware.rag.catalog import StoreRecord
from middleware.rag.freshness import StoreMissing
from middleware.rag.retrieval import Retrieval
from proxy.asgi import BodyLimits, trace_of
from proxy.errors import FluidoError, NotFound, PermissionDenied, StoreUnavailable, render
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


class ApiBase:
    """State the handlers share; ``retrieval`` is None until the lifespan has loaded the embedding model."""

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
            except catalog.EmbeddingMismatch as exc:
                return _error(request, StoreUnavailable(f"The vector store cannot be used here: {exc}."))
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


async def file_of(r: Retrieval, file_id: str, with_text: bool = False) -> tuple[catalog.FileRecord, str]:
    found = await r.backend.run(lambda b: catalog.get_file(b, file_id, with_text))
    if found is None:
        raise NotFound(f"No file with id '{file_id}'.", param="file_id")
    return found
