"""Builds the retrieval service from ``[rag]``. Blocking (loads the embedding model): call it in a thread."""

from __future__ import annotations

from pathlib import Path

from middleware.rag.backend import ChromaBackend
from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from middleware.rag.config import RagConfig
from middleware.rag.retrieval import Retrieval
from proxy.services.embedder import Embedder, bundled_minilm_path, keep_freed_memory


def build_retrieval(cfg: RagConfig, bulk: bool = False, searches: bool = True) -> Retrieval:
    """``bulk``: for ``fluido ingest``, where no event loop shares the CPU, so document batches are
    embedded on ``ingest_threads`` workers (0: one per core); a server embeds them on one. ``searches``:
    False for a process that only writes (``fluido ingest``), which then skips loading the query model
    (ONNX Runtime). The torch model is loaded only when documents are first embedded."""
    Path(cfg.path).mkdir(parents=True, exist_ok=True)
    if bulk:
        keep_freed_memory()
    chunker = Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(cfg.chunk_tokens, cfg.chunk_overlap))
    # Its own embedder (the shared class, its own thread; the process's one ONNX session for queries): a
    # long ingest batch must not hold up the semantic cache's look-ups. Query vectors are cached in memory
    # and in SQLite next to the stores.
    embedder = Embedder(
        cache_path=Path(cfg.path) / "query-embeddings.sqlite",
        precision=cfg.embedding_precision,
        batch_threads=cfg.ingest_threads if bulk else 1,
        fast_queries=searches,
    )
    return Retrieval(cfg, ChromaBackend(cfg), embedder, chunker)
