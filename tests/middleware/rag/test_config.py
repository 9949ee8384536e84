"""``[rag]`` embedding settings: parsed, checked, and honoured by the retrieval that the factory builds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from middleware.rag.config import RagConfig
from middleware.rag.factory import build_retrieval
from proxy.config import ConfigError, parse
from proxy.services.embedder import Embedder, resolve_precision
from tests.support.counting_model import CountingModel

MINIMAL = {
    "upstreams": {"none": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}},
    "models": {"default": {"targets": [{"upstream": "none", "model": "none"}]}},
}


def test_embedding_settings_default_to_auto_precision_and_every_core_for_ingest() -> None:
    cfg = parse({**MINIMAL, "rag": {"enabled": True}}).rag
    assert (cfg.embedding_precision, cfg.ingest_threads) == ("auto", 0)
    cfg = parse({**MINIMAL, "rag": {"embedding_precision": "float32", "ingest_threads": 1}}).rag
    assert (cfg.embedding_precision, cfg.ingest_threads) == ("float32", 1)


def test_ingest_threads_0_is_one_worker_per_core() -> None:
    embedder = Embedder(CountingModel(), batch_threads=0)
    embedder.close()
    assert embedder.batch_threads == len(os.sched_getaffinity(0))


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse({**MINIMAL, "rag": {"embedding_precision": "int8"}})
    assert any(p.startswith("rag.embedding_precision:") for p in info.value.problems)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "auto"])
async def test_the_factory_honours_precision_and_ingest_threads(tmp_path: Path, precision: str) -> None:
    cfg = RagConfig(enabled=True, path=str(tmp_path / "rag"), embedding_precision=precision, ingest_threads=3)
    server, bulk = build_retrieval(cfg), build_retrieval(cfg, bulk=True, searches=False)
    try:
        assert server.embedder.precision == bulk.embedder.precision == resolve_precision(precision)
        assert server.embedder.batch_threads == 1
        assert bulk.embedder.batch_threads == 3
        # Only a process that searches makes the query model.
        assert server.embedder.query_model is not None and bulk.embedder.query_model is None
    finally:
        await server.close()
        await bulk.close()
