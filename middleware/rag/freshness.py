"""Each store's snapshot in this process, kept fresh.

A store is loaded on first use (from the copy saved under ``[rag] path`` when its generation still
matches, else rebuilt from Chroma). After that, a write through this process, or the poll that reads the
generations of the stores in use every ``refresh_seconds``, schedules a rebuild in the background; queries
keep the snapshot they have until the new one replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from middleware.rag import catalog, snapshot
from middleware.rag.backend import ChromaBackend, RagUnavailable
from middleware.rag.config import RagConfig
from middleware.rag.lexical import Analyzer
from middleware.rag.snapshot import Snapshot

T = TypeVar("T")


class StoreMissing(Exception):
    """No vector store with this id."""


class Snapshots:
    def __init__(
        self,
        cfg: RagConfig,
        backend: ChromaBackend,
        analyzer: Analyzer,
        cpu: Callable[..., Awaitable[Any]],
        space: str,
    ) -> None:
        self.cfg = cfg
        self.space = space  # the embedder's: a store of another vector space is never searched
        self.backend = backend
        self.analyzer = analyzer
        self.cpu = cpu
        self._snapshots: dict[str, Snapshot] = {}
        self._generations: dict[str, str] = {}  # the newest generation known per store in use
        self._rebuilds: dict[str, asyncio.Task[None]] = {}
        self._loading: dict[str, asyncio.Task[Snapshot]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._indexer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-rag-bm25")

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_loop())

    def held(self, store_id: str) -> Snapshot | None:
        """The snapshot in use, if the store is loaded."""
        return self._snapshots.get(store_id)

    def forget(self, store_id: str) -> None:
        self._snapshots.pop(store_id, None)
        self._generations.pop(store_id, None)
        if (task := self._rebuilds.pop(store_id, None)) is not None:
            task.cancel()

    def moved(self, store_id: str, generation: str) -> None:
        if store_id in self._snapshots:  # only stores in use are kept fresh; others load on first use
            self._generations[store_id] = generation
            self._schedule(store_id)

    def _schedule(self, store_id: str) -> None:
        if (task := self._rebuilds.get(store_id)) is None or task.done():
            self._rebuilds[store_id] = asyncio.create_task(self._rebuild_until_fresh(store_id))

    async def _rebuild_until_fresh(self, store_id: str) -> None:
        with contextlib.suppress(RagUnavailable, StoreMissing):
            while (wanted := self._generations.get(store_id)) is not None:
                current = self._snapshots.get(store_id)
                if current is None or current.generation == wanted:
                    return
                fresh = await self._build(store_id, wanted, current)
                if store_id in self._snapshots:
                    if self._generations.get(store_id) != fresh.generation:
                        _carry_deletions(self._snapshots[store_id], fresh)
                    self._snapshots[store_id] = fresh

    async def _build(self, store_id: str, generation: str, old: Snapshot) -> Snapshot:
        cfg = self.cfg
        found = await self.backend.run(
            lambda b: snapshot.collect(b, store_id, old), wait=max(60.0, cfg.timeout * 10)
        )
        # The BM25 build runs on the indexer's own thread: never on the event loop, and never in the pools
        # searches use (Chroma's workers, the CPU pool), so however long it takes, queries are answered
        # meanwhile with the snapshot they have. One build at a time: stores rebuild one after another.
        fresh = await asyncio.get_running_loop().run_in_executor(
            self._indexer,
            partial(snapshot.assemble, generation, old, found, self.analyzer, cfg.bm25_k1, cfg.bm25_b),
        )
        with contextlib.suppress(OSError):
            await self.cpu(snapshot.save, fresh, self._saved(store_id))
        return fresh

    def _saved(self, store_id: str) -> Path:
        return Path(self.cfg.path) / "bm25" / store_id

    async def get(self, store_id: str) -> Snapshot:
        """The store's snapshot; the first use in this process loads (or builds) it."""
        if (known := self._snapshots.get(store_id)) is not None:
            return known
        task = self._loading.get(store_id)
        if task is None:
            task = self._loading[store_id] = asyncio.create_task(self._first_load(store_id))
            task.add_done_callback(lambda _: self._loading.pop(store_id, None))
        return await asyncio.shield(task)

    async def _first_load(self, store_id: str) -> Snapshot:
        found = await self.backend.run(lambda b: catalog.get_stores(b, [store_id]))
        if not found:
            raise StoreMissing(store_id)
        catalog.require_space(found[0], self.space)
        generation = found[0].generation
        saved = await self.cpu(snapshot.load, self._saved(store_id)) or Snapshot.empty()
        snap = saved if saved.generation == generation else await self._build(store_id, generation, saved)
        self._snapshots[store_id] = snap
        self._generations[store_id] = generation
        return snap

    async def prepare(self, store_id: str) -> None:
        """Loads, brings up to date and saves the store's snapshot (``fluido ingest`` ends with it)."""
        await self.get(store_id)
        if (task := self._rebuilds.get(store_id)) is not None:
            await task

    async def generation(self, store_id: str) -> str:
        """The store's generation as this process knows it (loading the store if needed)."""
        if (known := self._generations.get(store_id)) is not None:
            return known
        return (await self.get(store_id)).generation

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.refresh_seconds)
            in_use = list(self._snapshots)
            if not in_use:
                continue
            try:
                records = await self.backend.run(partial(catalog.get_stores, ids=in_use))
            except RagUnavailable:
                continue
            found = {r.id: r.generation for r in records}
            for store_id in in_use:
                generation = found.get(store_id)
                if generation is None:
                    self.forget(store_id)  # deleted through another replica
                    continue
                self._generations[store_id] = generation
                snap = self._snapshots.get(store_id)
                # Also when a rebuild failed earlier (Chroma was down): retried until it lands.
                if snap is not None and snap.generation != generation:
                    self._schedule(store_id)

    async def close(self) -> None:
        tasks = [t for t in (self._refresher, *self._rebuilds.values(), *self._loading.values()) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # A BM25 build still running finishes on its thread: wait for it there, not on the event loop.
        await asyncio.to_thread(self._indexer.shutdown, wait=True, cancel_futures=True)


def _carry_deletions(current: Snapshot, fresh: Snapshot) -> None:
    """A rebuild that a newer write overtook may still hold chunks deleted while it ran, which the current
    snapshot masks: they stay masked until the next rebuild, which that write has scheduled. (A chunk both
    added and deleted while the rebuild ran is not in the current snapshot to be masked: it can be found by
    BM25 alone until that next rebuild lands.)"""
    for row in np.flatnonzero(~current.alive):
        if (kept := fresh.rows.get(current.ids[row])) is not None:
            fresh.alive[kept] = False
