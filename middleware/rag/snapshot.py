"""A store's chunks as this process holds them: texts, attributes and the BM25 index over them.

Chroma is the source of truth. A snapshot is rebuilt from it when the store's generation (in the catalog)
moves: only chunks it does not hold yet are fetched (``collect``, a Chroma read), then only those are
analysed and BM25 is rebuilt (``assemble``, CPU work), and the new snapshot replaces the old one in a
single assignment, so a query always sees one consistent snapshot. The last snapshot of each store is
saved under ``[rag] path`` so a restart does not fetch and re-index everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
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
    # Each row's BM25 terms, kept so that a rebuild analyses only new chunks; empty when loaded from disk.
    terms: list[list[str]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = {chunk_id: i for i, chunk_id in enumerate(self.ids)}

    @classmethod
    def empty(cls) -> Snapshot:
        return cls("", [], [], [], Bm25Index(None, 0), np.zeros(0, dtype=bool))

    def forget_file(self, file_id: str, keep: frozenset[str] = frozenset()) -> None:
        for i, meta in enumerate(self.metas):
            if meta.get("fluido_file") == file_id and self.ids[i] not in keep:
                self.alive[i] = False


def fetch_chunks(b: ChromaBackend, store_id: str, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Blocking: text and metadata of these chunks, by id (ids no longer there are left out)."""
    collection = b.collection(chunks_collection(store_id))
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for start in range(0, len(ids), PAGE):
        found = collection.get(ids=ids[start : start + PAGE], include=["documents", "metadatas"])
        for cid, doc, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True):
            out[cid] = (doc or "", dict(meta or {}))
    return out


@dataclass(frozen=True, slots=True)
class Collected:
    """What Chroma holds for a store now: its chunk ids, and the chunks a snapshot did not have."""

    current: list[str]
    fetched: dict[str, tuple[str, dict[str, Any]]]


def collect(b: ChromaBackend, store_id: str, old: Snapshot) -> Collected:
    """Blocking (a Chroma read): the store's chunk ids now, and text and metadata of those ``old`` lacks."""
    current: list[str] = b.collection(chunks_collection(store_id)).get(include=[])["ids"]
    return Collected(current, fetch_chunks(b, store_id, [cid for cid in current if cid not in old.rows]))


def assemble(
    generation: str, old: Snapshot, found: Collected, analyzer: Analyzer, k1: float, bb: float
) -> Snapshot:
    """Blocking (CPU): the new snapshot, reusing the texts and terms ``old`` already holds."""
    ids, texts, metas, terms = [], [], [], []
    for cid in found.current:
        if (row := old.rows.get(cid)) is not None:
            text, meta = old.texts[row], old.metas[row]
            row_terms = old.terms[row] if old.terms else analyzer.terms(text)
        elif cid in found.fetched:
            text, meta = found.fetched[cid]
            row_terms = analyzer.terms(text)
        else:
            continue
        ids.append(cid)
        texts.append(text)
        metas.append(meta)
        terms.append(row_terms)
    unchanged = ids == old.ids and old.bm25.size == len(ids)
    bm25 = old.bm25 if unchanged else Bm25Index.from_terms(terms, k1, bb)
    return Snapshot(generation, ids, texts, metas, bm25, np.ones(len(ids), dtype=bool), terms)


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
    old = directory.with_name(directory.name + f".old{os.getpid()}")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load(directory: Path) -> Snapshot | None:
    """Blocking: the saved snapshot, or None when there is none or it cannot be read."""
    with contextlib.suppress(OSError, ValueError, KeyError, orjson.JSONDecodeError):
        body = orjson.loads((directory / "chunks.json").read_bytes())
        ids = body["ids"]
        bm25 = Bm25Index.load(directory / "bm25", len(ids)) if ids else Bm25Index(None, 0)
        return Snapshot(
            body["generation"], ids, body["texts"], body["metas"], bm25, np.ones(len(ids), dtype=bool)
        )
    return None


def score_and_fetch(
    b: ChromaBackend, qvec: np.ndarray, unscored: dict[str, list[str]], unknown: dict[str, list[str]]
) -> tuple[dict[tuple[str, str], float], dict[str, tuple[str, dict[str, Any]]]]:
    """Blocking: cosine scores of chunks found by BM25 only, and text and metadata of unknown chunks."""
    scores: dict[tuple[str, str], float] = {}
    for store_id, ids in unscored.items():
        found = b.collection(chunks_collection(store_id)).get(ids=ids, include=["embeddings"])
        for cid, vector in zip(found["ids"], found["embeddings"], strict=True):
            scores[(store_id, cid)] = max(0.0, min(1.0, float(np.dot(np.asarray(vector), qvec))))
    fetched: dict[str, tuple[str, dict[str, Any]]] = {}
    for store_id, ids in unknown.items():
        fetched.update(fetch_chunks(b, store_id, ids))
    return scores, fetched
