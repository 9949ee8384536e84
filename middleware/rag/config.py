"""Configuration of retrieval: ``[rag]`` (the stores, their indexes, fusion, access) and
``[models.<alias>.rag]`` (what a chat request to that alias gets injected)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.config_reader import Reader
from proxy.services.embedder import PRECISIONS

INJECT_WHERE = ("system", "before_last_user")
# all-MiniLM-L6-v2 reads 256 word pieces, two of which are its [CLS] and [SEP] markers.
MODEL_MAX_TOKENS = 254


@dataclass(frozen=True, slots=True)
class ModelRagConfig:
    """``[models.<alias>.rag]``: context injected into every chat request to the alias."""

    stores: tuple[str, ...] = ()  # store ids or names
    top_k: int = 4
    budget_tokens: int = 1024  # at most this many tokens of context, and never more than fits
    min_score: float = 0.3  # passages below this cosine similarity to the query are not injected
    where: str = "system"  # "system": in the system message; "before_last_user": just before that turn
    query_turns: int = 1  # the query is the last N user turns
    context_window: int = 0  # the upstream's context in tokens; 0 = from the target (n_ctx, max_context)
    reserve_tokens: int = 512  # kept for the answer when the request sets no max_tokens


@dataclass(frozen=True, slots=True)
class RagConfig:
    enabled: bool = False
    path: str = ".fluido/rag"  # the embedded Chroma's directory and the BM25 indexes ...
    host: str = ""  # ... or a Chroma server (chroma run); BM25 indexes then live under ``path``
    port: int = 8000
    timeout: float = 5.0  # seconds a Chroma call may take before retrieval is skipped
    hnsw_m: int = 16
    hnsw_construction_ef: int = 200
    hnsw_search_ef: int = 128
    chunk_tokens: int = MODEL_MAX_TOKENS  # word pieces per chunk (at most the model's 254)
    chunk_overlap: int = 48
    candidates: int = 100  # chunks each retriever proposes before fusion
    # Tuned by bench.rag on 70 % of SciFact's train claims (nDCG@10, grid k 5-100, dense weight 0.3-0.8);
    # 60, the usual default, was 0.012 lower on the other 30 %.
    rrf_k: float = 5.0
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    refresh_seconds: float = 1.0  # how often a replica checks whether another one changed a store
    workers: int = 2  # threads for chunking and BM25 (CPU work kept off the event loop)
    batch_size: int = 32  # texts per embedding batch while ingesting (64 and 128 cost more CPU per text)
    # "auto": bfloat16 where the CPU has it natively (AVX512_BF16, AMX), else float32. Same vectors either
    # way (cosine >= 0.9999), so a store can be searched whichever setting embedded it.
    embedding_precision: str = "auto"
    # `fluido ingest`'s embedding workers, each running whole batches on one torch thread; 0 = one per core
    ingest_threads: int = 0
    max_file_bytes: int = 32 * 1024 * 1024
    # Which API keys may read (search, inject) which store, by key name: ["*"] for every store. Keys not
    # named here read every store; admin keys always may. Only admin keys write.
    readers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # [models.<alias>.rag], by alias: what chat requests to that alias get injected.
    models: Mapping[str, ModelRagConfig] = field(default_factory=dict)


def parse_rag(r: Reader) -> RagConfig:
    d = RagConfig()
    readers: dict[str, tuple[str, ...]] = {}
    for name, stores in r.table_of("readers").items():
        if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
            r.problems.append(f"rag.readers.{name}: must be a list of store ids or names")
        else:
            readers[name] = tuple(stores)
    cfg = RagConfig(
        enabled=r.boolean("enabled", d.enabled),
        path=r.text("path", d.path),
        host=r.text("host", d.host),
        port=r.integer("port", d.port, 1, 65535),
        timeout=r.number("timeout", d.timeout),
        hnsw_m=r.integer("hnsw_m", d.hnsw_m, 2),
        hnsw_construction_ef=r.integer("hnsw_construction_ef", d.hnsw_construction_ef, 1),
        hnsw_search_ef=r.integer("hnsw_search_ef", d.hnsw_search_ef, 1),
        chunk_tokens=r.integer("chunk_tokens", d.chunk_tokens, 16, MODEL_MAX_TOKENS),
        chunk_overlap=r.integer("chunk_overlap", d.chunk_overlap, 0),
        candidates=r.integer("candidates", d.candidates, 1, 1000),
        rrf_k=r.number("rrf_k", d.rrf_k, -1.0),
        dense_weight=r.number("dense_weight", d.dense_weight, -1.0),
        bm25_weight=r.number("bm25_weight", d.bm25_weight, -1.0),
        bm25_k1=r.number("bm25_k1", d.bm25_k1),
        bm25_b=r.number("bm25_b", d.bm25_b, -1.0),
        refresh_seconds=r.number("refresh_seconds", d.refresh_seconds),
        workers=r.integer("workers", d.workers, 1, 64),
        batch_size=r.integer("batch_size", d.batch_size, 1, 4096),
        embedding_precision=r.text("embedding_precision", d.embedding_precision, PRECISIONS),
        ingest_threads=r.integer("ingest_threads", d.ingest_threads, 0, 1024),
        max_file_bytes=r.integer("max_file_bytes", d.max_file_bytes, 1),
        readers=readers,
    )
    if cfg.chunk_overlap * 2 > cfg.chunk_tokens:
        r.problems.append("rag.chunk_overlap: must be at most half of rag.chunk_tokens")
    if cfg.dense_weight + cfg.bm25_weight <= 0:
        r.problems.append("rag: dense_weight and bm25_weight cannot both be 0")
    r.done()
    return cfg


def parse_model_rag(r: Reader) -> ModelRagConfig:
    d = ModelRagConfig()
    min_score = r.number("min_score", d.min_score, -1.0)
    if min_score > 1:
        r.problems.append(f"{r.path}.min_score: must be at most 1")
    cfg = ModelRagConfig(
        stores=r.strings("stores"),
        top_k=r.integer("top_k", d.top_k, 1, 50),
        budget_tokens=r.integer("budget_tokens", d.budget_tokens, 1),
        min_score=min_score,
        where=r.text("where", d.where, INJECT_WHERE),
        query_turns=r.integer("query_turns", d.query_turns, 1),
        context_window=r.integer("context_window", d.context_window, 0),
        reserve_tokens=r.integer("reserve_tokens", d.reserve_tokens, 0),
    )
    r.done()
    return cfg
