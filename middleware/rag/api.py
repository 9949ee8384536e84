"""OpenAI's Files and Vector Stores endpoints, so the official SDK ingests and searches unchanged.

Attaching a file chunks, embeds and indexes it within the request, so a vector store file is
``completed`` when the call returns (the SDK's ``create_and_poll`` finds it done at once). Route handlers
parse, check access, call ``Retrieval`` and render; errors are OpenAI-shaped (``proxy/errors.py``). The
handlers live in ``api_files.py`` and ``api_stores.py``, what they share in ``api_base.py``.
"""

from __future__ import annotations

from starlette.routing import Route

from middleware.rag.api_files import FilesApi
from middleware.rag.api_stores import StoresApi


class RagApi(FilesApi, StoresApi):
    """The handlers; ``retrieval`` is None until the lifespan has loaded the embedding model."""

    def routes(self) -> list[Route]:
        return self.file_routes() + self.store_routes()
