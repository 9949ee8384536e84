"""The shared embedder: vectors computed in its worker thread, cached in memory and in SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from proxy.services.embedder import Embedder
from tests.support.counting_model import CountingModel


@pytest.fixture
def counting(tmp_path: Path) -> tuple[CountingModel, Path]:
    return CountingModel(), tmp_path / "embeddings.sqlite"


async def test_embeddings_run_in_the_worker_and_are_cached_in_memory(
    counting: tuple[CountingModel, Path],
) -> None:
    model, _ = counting
    embedder = Embedder(model)
    try:
        first = await embedder.embed("hello")
        first.append(1.0)  # a caller's copy: the cache must not change
        again = await embedder.embed("hello")
    finally:
        embedder.close()
    assert model.calls == 1 and len(again) == 384
    assert model.threads == {"fluido-embed_0"}
    assert abs(float(np.linalg.norm(again)) - 1.0) < 1e-5


async def test_the_sqlite_cache_survives_a_restart(counting: tuple[CountingModel, Path]) -> None:
    model, path = counting
    embedder = Embedder(model, cache_path=path)
    try:
        vector = await embedder.embed("¿Qué hora es?")
    finally:
        embedder.close()
    again = Embedder(model, cache_path=path)
    try:
        assert await again.embed("¿Qué hora es?") == vector
    finally:
        again.close()
    assert model.calls == 1


async def test_an_expired_embedding_is_computed_again(counting: tuple[CountingModel, Path]) -> None:
    model, path = counting
    embedder = Embedder(model, cache_path=path, ttl_seconds=0.05)
    try:
        await embedder.embed("hello")
        await asyncio.sleep(0.1)
        await embedder.embed("hello")  # stale in memory and on disk
    finally:
        embedder.close()
    assert model.calls == 2
    fresh = Embedder(model, cache_path=path, ttl_seconds=60)
    try:
        await fresh.embed("hello")  # the second embedding was stored with its own time
    finally:
        fresh.close()
    assert model.calls == 2


async def test_the_memory_cache_keeps_only_max_entries(counting: tuple[CountingModel, Path]) -> None:
    model, _ = counting
    embedder = Embedder(model, max_entries=2)
    try:
        for text in ("a", "b", "c", "a"):
            await embedder.embed(text)
    finally:
        embedder.close()
    assert model.calls == 4  # "a" was evicted by "c"
