"""Builds the retrieval service from ``[rag]``. Blocking (loads the embedding model): call it in a thread."""

from __future__ import annotations

from pathlib import Path

from middleware.centroids import bundled_minilm_path, load_minilm
from middleware.rag.backend import ChromaBackend
from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from middleware.rag.config import RagConfig
from middleware.rag.embedding import MiniLMVectors
from middleware.rag.retrieval import Retrieval


def build_retrieval(cfg: RagConfig) -> Retrieval:
    Path(cfg.path).mkdir(parents=True, exist_ok=True)
    chunker = Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(cfg.chunk_tokens, cfg.chunk_overlap))
    return Retrieval(cfg, ChromaBackend(cfg), MiniLMVectors(load_minilm()), chunker)
