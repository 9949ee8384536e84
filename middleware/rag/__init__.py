"""RAG: vector stores (OpenAI's Files and Vector Stores API, ``fluido ingest``), hybrid retrieval, and
context injection into chat requests. ``Rag`` is what the app factory uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from middleware.rag.access import Access
from middleware.rag.api import RagApi
from middleware.rag.backend import RagUnavailable
from middleware.rag.config import ModelRagConfig, RagConfig
from middleware.rag.freshness import StoreMissing
from middleware.rag.inject import Holder, RagInject, RagVersion
from middleware.rag.retrieval import Retrieval
from proxy.asgi import BodyLimits

log = structlog.get_logger("fluido.rag")

__all__ = ["Rag", "RagInject", "RagVersion"]


class Rag:
    """The parts the app factory places: two chain links, the API routes, and a lifespan."""

    def __init__(
        self,
        cfg: RagConfig,
        keys: Mapping[str, bool],
        models: Mapping[str, ModelRagConfig],
        context_windows: Mapping[str, int],
        limits: BodyLimits,
    ) -> None:
        self.cfg = cfg
        self.models = models
        access = Access(keys, cfg.readers)
        self.holder = Holder()
        self.version = RagVersion(self.holder, models)
        self.inject = RagInject(self.holder, models, context_windows, access)
        self.api = RagApi(access, limits, cfg.max_file_bytes)
        self._starting: asyncio.Task[None] | None = None

    async def _build(self) -> None:
        from middleware.rag.factory import build_retrieval  # loads a model: in a thread, after start-up

        try:
            retrieval: Retrieval = await asyncio.to_thread(build_retrieval, self.cfg)
        except Exception as exc:  # a missing model: chat goes on without context, /ready says why
            log.error("rag_unavailable", error=str(exc) or type(exc).__name__)
            return
        retrieval.start()
        self.holder.retrieval = self.api.retrieval = retrieval
        log.info("rag_ready")

    def start(self) -> None:
        self._starting = asyncio.create_task(self._build())

    async def ping(self) -> None:
        """For /ready: raises when retrieval cannot serve (still loading, or Chroma unreachable)."""
        if self.holder.retrieval is None:
            raise RagUnavailable("retrieval is not ready (its embedding model is loading, or failed to)")
        await self.holder.retrieval.backend.ping()

    async def check_stores(self) -> None:
        """For /ready: raises naming the stores that ``[models.<alias>.rag]`` reads and that do not exist
        (requests to those aliases go on without context)."""
        if self.holder.retrieval is None:
            raise RagUnavailable("retrieval is not ready (its embedding model is loading, or failed to)")
        missing = []
        for alias, settings in sorted(self.models.items()):
            for name in settings.stores:
                try:
                    await self.holder.stores((name,))
                except StoreMissing:
                    missing.append(f"{name} (models.{alias})")
        if missing:
            raise StoreMissing("vector stores not found: " + ", ".join(missing))

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self.holder.retrieval is not None:
            await self.holder.retrieval.close()
