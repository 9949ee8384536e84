"""The shared embedder: vectors computed in its worker thread, cached in memory and in SQLite."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.services.embedder import Embedder, load_minilm, native_bf16, resolve_precision
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


SAMPLES = [
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "The Zorblax reactor is cooled by liquid helium at four kelvin.",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer. " * 12,  # a long chunk
    "ok",
]


@pytest.fixture(scope="module")
def minilm() -> Any:
    return load_minilm()


class RecordingModel:
    """MiniLM, recording per call (queries: ``encode``; document batches: the forward pass) its thread,
    whether bfloat16 autocast was on and how many torch threads were set."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_seq_length = model.max_seq_length
        self.seen: list[tuple[str, bool, int]] = []

    def _record(self) -> None:
        import torch

        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        self.seen.append((threading.current_thread().name, autocast, torch.get_num_threads()))

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = True) -> Any:
        self._record()
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize_embeddings)

    def __call__(self, features: Any) -> Any:
        self._record()
        return self.model(features)


@pytest.mark.parametrize(("precision", "autocast"), [("bfloat16", True), ("float32", False)])
async def test_the_configured_precision_is_used_for_queries_and_documents(
    minilm: Any, precision: str, autocast: bool
) -> None:
    model = RecordingModel(minilm)
    embedder = Embedder(model, precision=precision)
    try:
        await embedder.embed("a query")
        await embedder.embed_many(["a chunk", "another chunk"])
    finally:
        embedder.close()
    assert [on for _, on, _ in model.seen] == [autocast, autocast]


def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it() -> None:
    assert resolve_precision("auto") == ("bfloat16" if native_bf16() else "float32")
    assert resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8")


async def test_batches_run_on_batch_threads_workers_and_queries_on_the_embedder_thread(minilm: Any) -> None:
    model = RecordingModel(minilm)
    embedder = Embedder(model, batch_threads=2)
    try:
        await embedder.embed_many(SAMPLES, batch_size=1)
        await embedder.embed("a query")
    finally:
        embedder.close()
    *batches, query = model.seen
    assert len(batches) == len(SAMPLES)
    assert {name for name, _, _ in batches} <= {"fluido-embed-bulk_0", "fluido-embed-bulk_1"}
    assert {threads for _, _, threads in batches} == {1}  # each worker on one torch thread
    assert query[0] == "fluido-embed_0"


async def test_bfloat16_vectors_are_the_float32_vectors(minilm: Any) -> None:
    fast, reference = Embedder(minilm, precision="bfloat16"), Embedder(minilm, precision="float32")
    try:
        got = await fast.embed_many(SAMPLES)
        want = await reference.embed_many(SAMPLES)
        query = np.asarray(await fast.embed(SAMPLES[0]))
    finally:
        fast.close()
        reference.close()
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * want).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    assert not np.array_equal(got, want)  # the bfloat16 path really ran
    assert float(query @ got[0]) > 0.9999  # a text embeds alike as a query and as a document
