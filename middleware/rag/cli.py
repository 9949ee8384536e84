"""``fluido ingest --config C --store NAME PATH...``: bulk loads into a vector store.

It writes through the same ``Retrieval.ingest`` as the HTTP API, in batches, and ends by building and
saving the store's BM25 index so that a server starting next finds it ready. With an embedded Chroma,
stop the server first (an embedded Chroma belongs to one process) or point both at a Chroma server.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from middleware.rag.backend import RagUnavailable
from middleware.rag.catalog import StoreFile
from middleware.rag.config import RagConfig
from middleware.rag.freshness import StoreMissing
from middleware.rag.ingest import Document
from middleware.rag.retrieval import Retrieval
from middleware.rag.sources import SourceError, documents, files_under

# Documents per write: the embedder sorts a write's chunks by length before batching them, so a bigger
# write pads less; small enough for a steady progress bar.
BATCH = 256
IN_FLIGHT = 2  # writes under way at once


@dataclass(frozen=True, slots=True)
class IngestReport:
    store_id: str
    documents: int
    changed: int
    chunks: int
    seconds: float


def batches(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def ingest_paths(
    retrieval: Retrieval, store: str, paths: list[Path], progress: bool = False
) -> IngestReport:
    """Ingests every document under ``paths`` into the store named (or with id) ``store``, creating it."""
    started = time.monotonic()
    try:
        store_id = (await retrieval.resolve(store)).id
    except StoreMissing:
        store_id = (await retrieval.create_store(store, {})).id
    files = files_under(paths)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="doc", desc="ingest", file=sys.stderr)
    count = changed = chunks = 0
    # Writes in flight: while one write's vectors go to Chroma, the next one's are computed (the embedder
    # queues a write's batches behind the previous one's, so its workers do not wait for Chroma).
    flying: deque[tuple[asyncio.Task[list[tuple[StoreFile, bool]]], set[str]]] = deque()

    async def land() -> None:
        """Counts the oldest write once it is done (writes land in order; a later one that failed raises
        when its turn comes)."""
        nonlocal count, changed, chunks
        done = await flying[0][0]
        flying.popleft()
        count += len(done)
        changed += sum(was_changed for _, was_changed in done)
        chunks += sum(record.chunks for record, _ in done)
        if bar is not None:
            bar.update(len(done))

    try:
        for batch in batches((d for f in files for d in documents(f)), BATCH):
            ids = {d.file_id for d in batch}
            # A document also in a write in flight waits for it, so the later copy replaces the earlier.
            while flying and (len(flying) == IN_FLIGHT or any(ids & other for _, other in flying)):
                await land()
            flying.append((asyncio.create_task(retrieval.ingest(store_id, batch)), ids))
        while flying:
            await land()
    finally:
        for task, _ in flying:  # a write failed (or we were cancelled): the others stop too
            task.cancel()
        await asyncio.gather(*(task for task, _ in flying), return_exceptions=True)
        if bar is not None:
            bar.close()
    await retrieval.prepare(store_id)
    return IngestReport(store_id, count, changed, chunks, time.monotonic() - started)


async def _run(cfg: RagConfig, store: str, paths: list[Path]) -> IngestReport:
    from middleware.rag.factory import build_retrieval

    for path in files_under(paths):  # a malformed file fails now, before the model loads
        for _ in documents(path):
            pass

    retrieval = await asyncio.to_thread(build_retrieval, cfg, True, False)  # bulk, no searches
    try:
        return await ingest_paths(retrieval, store, paths, progress=sys.stderr.isatty())
    finally:
        await retrieval.close()


def ingest_command(cfg: RagConfig, store: str, paths: list[str]) -> int:
    try:
        report = asyncio.run(_run(cfg, store, [Path(p) for p in paths]))
    except SourceError as exc:
        print(f"fluido ingest: {exc}", file=sys.stderr)
        return 1
    except RagUnavailable as exc:
        print(f"fluido ingest: Chroma is unavailable ({exc})", file=sys.stderr)
        return 1
    print(f"store      {report.store_id} ({store})")
    unchanged = report.documents - report.changed
    print(f"documents  {report.documents} ({report.changed} new or changed, {unchanged} unchanged)")
    print(f"chunks     {report.chunks}")
    print(f"time       {report.seconds:.1f} s")
    return 0
