"""Documents going into a store: identity, content hash, chunk ids and chunk metadata.

A document is identified in its store by ``file_id``. Its content hash covers everything that shapes its
chunks (text, filename, attributes, chunking), so ingesting it again unchanged is a no-op and a changed one
replaces its chunks. Chunk ids carry the hash, so new chunks are written before the old ones are deleted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from middleware.rag.catalog import StoreFile
from middleware.rag.chunking import ChunkSpec


@dataclass(frozen=True, slots=True)
class Document:
    file_id: str
    filename: str
    text: str
    attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    spec: ChunkSpec | None = None  # None: the store's configured chunking


def content_hash(doc: Document) -> str:
    spec = [doc.spec.max_tokens, doc.spec.overlap] if doc.spec else None
    body = [doc.filename, doc.text, dict(doc.attributes), spec]
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chunk_ids(file_id: str, digest: str, count: int) -> list[str]:
    return [f"{file_id}:{digest[:16]}:{i}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class Planned:
    """What ingesting one document will do."""

    doc: Document
    record: StoreFile
    changed: bool

    def metadata(self) -> dict[str, Any]:
        # Attributes first: the reserved keys win over an attribute that borrows their names.
        return {**self.doc.attributes, "fluido_file": self.doc.file_id, "fluido_name": self.doc.filename,
                "fluido_hash": self.record.content_hash}  # fmt: skip

    def with_chunks(self, count: int) -> StoreFile:
        return replace(self.record, chunks=count)


def plan(
    store_id: str, docs: Sequence[Document], known: Mapping[str, StoreFile], default: ChunkSpec
) -> list[Planned]:
    out = []
    now = int(time.time())
    for doc in docs:
        digest = content_hash(doc)
        old = known.get(doc.file_id)
        if old is not None and old.content_hash == digest:
            out.append(Planned(doc, old, False))
            continue
        spec = doc.spec or default
        sizes = {"max_chunk_size_tokens": spec.max_tokens, "chunk_overlap_tokens": spec.overlap}
        record = StoreFile(
            store_id=store_id,
            file_id=doc.file_id,
            filename=doc.filename,
            created_at=now,
            content_hash=digest,
            chunks=0,
            bytes=len(doc.text.encode()),
            attributes=dict(doc.attributes),
            chunking={"type": "static", "static": sizes},
        )
        out.append(Planned(doc, record, True))
    return out
