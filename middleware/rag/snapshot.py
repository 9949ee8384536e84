"""A store's chunks as this process holds them: texts, attributes, embeddings and the BM25 index over them.

Chroma is the source of truth. A snapshot is rebuilt from it when the store's generation (in the catalog)
moves: only chunks it does not hold yet are fetched (``collect``, a Chroma read), then only those are
analysed and BM25 is rebuilt (``assemble``, CPU work), and the new snapshot replaces the old one in a
single assignment, so a query always sees one consistent snapshot. The last snapshot of each store is
saved under ``[rag] path`` so a restart does not fetch and re-index everything.

The embeddings are held so that a chunk found by BM25 alone gets its cosine score here, by one dot product,
instead of in a Chroma read per query (~1 ms of a search's ~10). 384 float32 per chunk: 15 MB for SciFact's
10k chunks, about twice their texts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from middleware.rag.backend import ChromaBackend, chunks_collection
from middleware.rag.lexical import Analyzer, Bm25Index

PAGE = 500  # ids per Chroma get: keeps one request's body small against a server
RESERVED = ("fluido_file", "fluido_name", "fluido_hash")


def attributes_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in RESERVED}


@dataclass(slots=True)
class Snapshot:
    generation: str
    ids: list[str]
    texts: list[str]
    metas: list[dict[str, Any]]
    bm25: Bm25Index
    alive: np.ndarray  # rows deleted since the rebuild are masked out until the next one
    vectors: np.ndarray  # each row's unit embedding, as Chroma holds it (rows x dimensions, float32)
    # Each row's BM25 terms, kept so that a rebuild analyses only new chunks; empty when loaded from disk.
    terms: list[list[str]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = {chunk_id: i for i, chunk_id in enumerate(self.ids)}

    @classmethod
    def empty(cls) -> Snapshot:
        return cls("", [], [], [], Bm25Index(None, 0), np.zeros(0, dtype=bool), np.zeros((0, 0), np.float32))

    def forget_file(self, file_id: str, keep: frozenset[str] = frozenset()) -> None:
        for i, meta in enumerate(self.metas):
            if meta.get("fluido_file") == file_id and self.ids[i] not in keep:
                self.alive[i] = False


def _pages(b: ChromaBackend, store_id: str, ids: list[str], include: list[str]) -> Iterator[Any]:
    collection = b.collection(chunks_collection(store_id))
    for start in range(0, len(ids), PAGE):
        yield collection.get(ids=ids[start : start + PAGE], include=include)


def fetch_chunks(b: ChromaBackend, store_id: str, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Blocking: text and metadata of these chunks, by id (ids no longer there are left out)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for found in _pages(b, store_id, ids, ["documents", "metadatas"]):
        for cid, doc, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True):
            out[cid] = (doc or "", dict(meta or {}))
    return out


@dataclass(frozen=True, slots=True)
class Collected:
    """What Chroma holds for a store now: its chunk ids, and the chunks a snapshot did not have (text and
    metadata, and their embeddings)."""

    current: list[str]
    fetched: dict[str, tuple[str, dict[str, Any]]]
    vectors: dict[str, np.ndarray]


def collect(b: ChromaBackend, store_id: str, old: Snapshot) -> Collected:
    """Blocking (a Chroma read): the store's chunk ids now, and the chunks ``old`` lacks."""
    current: list[str] = b.collection(chunks_collection(store_id)).get(include=[])["ids"]
    fetched: dict[str, tuple[str, dict[str, Any]]] = {}
    vectors: dict[str, np.ndarray] = {}
    missing = [cid for cid in current if cid not in old.rows]
    for found in _pages(b, store_id, missing, ["documents", "metadatas", "embeddings"]):
        rows = zip(found["ids"], found["documents"], found["metadatas"], found["embeddings"], strict=True)
        for cid, doc, meta, vector in rows:
            fetched[cid] = (doc or "", dict(meta or {}))
            vectors[cid] = np.asarray(vector, dtype=np.float32)
    return Collected(current, fetched, vectors)


def assemble(
    generation: str, old: Snapshot, found: Collected, analyzer: Analyzer, k1: float, bb: float
) -> Snapshot:
    """Blocking (CPU): the new snapshot, reusing the texts and terms ``old`` already holds."""
    ids, texts, metas, terms, vectors = [], [], [], [], []
    for cid in found.current:
        if (row := old.rows.get(cid)) is not None:
            text, meta, vector = old.texts[row], old.metas[row], old.vectors[row]
            row_terms = old.terms[row] if old.terms else analyzer.terms(text)
        elif cid in found.fetched:
            (text, meta), vector = found.fetched[cid], found.vectors[cid]
            row_terms = analyzer.terms(text)
        else:
            continue
        ids.append(cid)
        texts.append(text)
        metas.append(meta)
        terms.append(row_terms)
        vectors.append(vector)
    unchanged = ids == old.ids and old.bm25.size == len(ids)
    bm25 = old.bm25 if unchanged else Bm25Index.from_terms(terms, k1, bb)
    matrix = old.vectors if unchanged else np.stack(vectors) if vectors else Snapshot.empty().vectors
    return Snapshot(generation, ids, texts, metas, bm25, np.ones(len(ids), dtype=bool), matrix, terms)


def save(snapshot: Snapshot, directory: Path) -> None:
    """Blocking: writes to a fresh directory, then renames it over the old one."""
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    snapshot.bm25.save(tmp / "bm25")
    body = {
        "generation": snapshot.generation,
        "ids": snapshot.ids,
        "texts": snapshot.texts,
        "metas": snapshot.metas,
    }
    (tmp / "chunks.json").write_bytes(orjson.dumps(body))
    np.save(tmp / "vectors.npy", snapshot.vectors, allow_pickle=False)
    old = directory.with_name(directory.name + f".old{os.getpid()}")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load(directory: Path) -> Snapshot | None:
    """Blocking: the saved snapshot, or None when there is none or it cannot be read (one saved before
    snapshots held embeddings included: the store is then fetched from Chroma again, once)."""
    with contextlib.suppress(OSError, ValueError, KeyError, orjson.JSONDecodeError):
        body = orjson.loads((directory / "chunks.json").read_bytes())
        ids = body["ids"]
        vectors = np.load(directory / "vectors.npy", allow_pickle=False)
        if len(vectors) != len(ids):
            return None
        bm25 = Bm25Index.load(directory / "bm25", len(ids)) if ids else Bm25Index(None, 0)
        return Snapshot(
            body["generation"],
            ids,
            body["texts"],
            body["metas"],
            bm25,
            np.ones(len(ids), dtype=bool),
            vectors,
        )
    return None
