"""OpenAI's Files endpoints (``/v1/files``): upload UTF-8 text, list, read, delete."""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from middleware.rag import catalog
from middleware.rag.api_base import ApiBase, file_of
from middleware.rag.objects import deleted, file_object, page
from middleware.rag.params import paging
from middleware.rag.retrieval import Retrieval
from proxy.asgi import BodyLimits
from proxy.errors import InvalidRequest

# Room for the multipart envelope around the file: boundaries, part headers and the purpose field.
MULTIPART_OVERHEAD = 64 * 1024


class FilesApi(ApiBase):
    """The file handlers."""

    async def create_file(self, request: Request, r: Retrieval) -> Any:
        # Read the upload under a size cap and the body deadline before parsing it: Starlette's form
        # parser would otherwise take a chunked upload of any size, as slowly as the client likes.
        upload_limits = BodyLimits(self.max_file_bytes + MULTIPART_OVERHEAD, self.limits.timeout)
        body = await upload_limits.read(request.scope, request.receive)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(request.scope, replay)
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
        return file_object((await file_of(r, request.path_params["file_id"]))[0])

    async def file_content(self, request: Request, r: Retrieval) -> Any:
        _, text = await file_of(r, request.path_params["file_id"], with_text=True)
        return Response(text.encode(), media_type="text/plain; charset=utf-8")

    async def delete_file(self, request: Request, r: Retrieval) -> Any:
        file_id = request.path_params["file_id"]
        await file_of(r, file_id)
        # Deleting a file takes it out of every store that holds it, from both indexes.
        for store_id in await r.backend.run(lambda b: catalog.stores_with_file(b, file_id)):
            await r.remove(store_id, file_id)
        await r.backend.run(lambda b: catalog.delete_file(b, file_id))
        return deleted(file_id, "file")

    def file_routes(self) -> list[Route]:
        g, w = self._guard, functools.partial(self._guard, write=True)
        return [
            Route("/v1/files", w(self.create_file), methods=["POST"]),
            Route("/v1/files", g(self.list_files), methods=["GET"]),
            Route("/v1/files/{file_id}", g(self.get_file), methods=["GET"]),
            Route("/v1/files/{file_id}", w(self.delete_file), methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", g(self.file_content), methods=["GET"]),
        ]
