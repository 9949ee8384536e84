"""The catalog's records: stores, uploaded files, and the files of each store.

Each function is blocking and takes the backend: run it through ``ChromaBackend.run``. JSON-valued fields
(a store's metadata, a file's attributes) are kept as JSON strings, since Chroma metadata is flat.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from middleware.rag.backend import CATALOG, PLACEHOLDER, ChromaBackend, RagUnavailable
from proxy.services.embedder import MINILM_SPACE

# Stores recorded before their embedding space was: MiniLM was the only model then.
EARLIER_SPACE = MINILM_SPACE


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def new_generation() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class StoreRecord:
    id: str
    name: str
    created_at: int
    generation: str
    metadata: dict[str, Any]
    embedding: str = EARLIER_SPACE  # the vector space of its chunks (``Embedder.space``)


class EmbeddingMismatch(RagUnavailable):
    """The store's chunks were embedded into another vector space than this process embeds queries in."""


def require_space(record: StoreRecord, space: str) -> None:
    if record.embedding != space:
        raise EmbeddingMismatch(
            f"vector store {record.id} holds {record.embedding} vectors, but this process embeds with {space}"
        )


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One document of a store: an uploaded file, or a record loaded by ``fluido ingest``."""

    store_id: str
    file_id: str
    filename: str
    created_at: int
    content_hash: str
    chunks: int
    bytes: int
    attributes: dict[str, Any]
    chunking: dict[str, Any]


def _store(rid: str, m: dict[str, Any]) -> StoreRecord:
    return StoreRecord(
        rid.removeprefix("store:"), m["name"], int(m["created_at"]), m["generation"],
        orjson.loads(m.get("metadata", "{}")), m.get("embedding", EARLIER_SPACE),
    )  # fmt: skip


def _store_file(m: dict[str, Any]) -> StoreFile:
    return StoreFile(
        m["store"], m["file"], m["filename"], int(m["created_at"]), m["hash"], int(m["chunks"]),
        int(m["bytes"]), orjson.loads(m["attributes"]), orjson.loads(m["chunking"]),
    )  # fmt: skip


def put_store(
    b: ChromaBackend, name: str, metadata: dict[str, Any], embedding: str, store_id: str | None = None
) -> StoreRecord:
    record = StoreRecord(
        store_id or new_id("vs"), name, int(time.time()), new_generation(), metadata, embedding
    )
    b.collection(CATALOG).upsert(
        ids=[f"store:{record.id}"],
        embeddings=[PLACEHOLDER],
        metadatas=[{
            "kind": "store", "name": name, "created_at": record.created_at, "generation": record.generation,
            "metadata": orjson.dumps(metadata).decode(), "embedding": embedding,
        }],
    )  # fmt: skip
    return record


def get_stores(b: ChromaBackend, ids: list[str] | None = None) -> list[StoreRecord]:
    catalog = b.collection(CATALOG)
    if ids is not None:
        found = catalog.get(ids=[f"store:{i}" for i in ids], include=["metadatas"])
    else:
        found = catalog.get(where={"kind": "store"}, include=["metadatas"])
    return [_store(rid, m) for rid, m in zip(found["ids"], found["metadatas"], strict=True)]


def bump_generation(b: ChromaBackend, store_id: str) -> str:
    """A new generation for the store: every replica (and the response cache) sees the store changed."""
    catalog = b.collection(CATALOG)
    found = catalog.get(ids=[f"store:{store_id}"], include=["metadatas"])
    if not found["ids"]:
        return ""
    metadata = dict(found["metadatas"][0])
    metadata["generation"] = generation = new_generation()
    catalog.upsert(ids=found["ids"], embeddings=[PLACEHOLDER], metadatas=[metadata])
    return generation


def delete_store(b: ChromaBackend, store_id: str) -> None:
    catalog = b.collection(CATALOG)
    catalog.delete(ids=[f"store:{store_id}"])
    catalog.delete(where={"$and": [{"kind": "store_file"}, {"store": store_id}]})


def put_file(b: ChromaBackend, filename: str, purpose: str, text: str, size: int) -> FileRecord:
    record = FileRecord(new_id("file"), filename, size, int(time.time()), purpose)
    b.collection(CATALOG).add(
        ids=[f"file:{record.id}"],
        embeddings=[PLACEHOLDER],
        documents=[text],
        metadatas=[{"kind": "file", "filename": filename, "bytes": size, "created_at": record.created_at,
                    "purpose": purpose}],
    )  # fmt: skip
    return record


def get_file(b: ChromaBackend, file_id: str, with_text: bool = False) -> tuple[FileRecord, str] | None:
    include = ["metadatas", "documents"] if with_text else ["metadatas"]
    found = b.collection(CATALOG).get(ids=[f"file:{file_id}"], include=include)
    if not found["ids"]:
        return None
    m = found["metadatas"][0]
    record = FileRecord(file_id, m["filename"], int(m["bytes"]), int(m["created_at"]), m["purpose"])
    return record, (found["documents"][0] or "") if with_text else ""


def list_files(b: ChromaBackend) -> list[FileRecord]:
    found = b.collection(CATALOG).get(where={"kind": "file"}, include=["metadatas"])
    return [
        FileRecord(
            rid.removeprefix("file:"), m["filename"], int(m["bytes"]), int(m["created_at"]), m["purpose"]
        )
        for rid, m in zip(found["ids"], found["metadatas"], strict=True)
    ]


def delete_file(b: ChromaBackend, file_id: str) -> None:
    b.collection(CATALOG).delete(ids=[f"file:{file_id}"])


def put_store_files(b: ChromaBackend, files: list[StoreFile]) -> None:
    if not files:
        return
    b.collection(CATALOG).upsert(
        ids=[f"sf:{f.store_id}:{f.file_id}" for f in files],
        embeddings=[PLACEHOLDER] * len(files),
        metadatas=[{
            "kind": "store_file", "store": f.store_id, "file": f.file_id, "filename": f.filename,
            "created_at": f.created_at, "hash": f.content_hash, "chunks": f.chunks, "bytes": f.bytes,
            "attributes": orjson.dumps(f.attributes).decode(), "chunking": orjson.dumps(f.chunking).decode(),
        } for f in files],
    )  # fmt: skip


def get_store_files(b: ChromaBackend, store_id: str, file_ids: list[str] | None = None) -> list[StoreFile]:
    catalog = b.collection(CATALOG)
    if file_ids is not None:
        found = catalog.get(ids=[f"sf:{store_id}:{f}" for f in file_ids], include=["metadatas"])
    else:
        where = {"$and": [{"kind": "store_file"}, {"store": store_id}]}
        found = catalog.get(where=where, include=["metadatas"])
    return [_store_file(m) for m in found["metadatas"]]


def stores_with_file(b: ChromaBackend, file_id: str) -> list[str]:
    found = b.collection(CATALOG).get(
        where={"$and": [{"kind": "store_file"}, {"file": file_id}]}, include=["metadatas"]
    )
    return [m["store"] for m in found["metadatas"]]


def delete_store_file(b: ChromaBackend, store_id: str, file_id: str) -> None:
    b.collection(CATALOG).delete(ids=[f"sf:{store_id}:{file_id}"])


def put_batch(b: ChromaBackend, store_id: str, file_ids: list[str], failed: int) -> tuple[str, int]:
    batch_id, created_at = new_id("vsfb"), int(time.time())
    b.collection(CATALOG).add(
        ids=[f"batch:{batch_id}"],
        embeddings=[PLACEHOLDER],
        metadatas=[{
            "kind": "batch", "store": store_id, "created_at": created_at, "total": len(file_ids),
            "failed": failed, "files": orjson.dumps(file_ids).decode(),
        }],
    )  # fmt: skip
    return batch_id, created_at


def get_batch(b: ChromaBackend, batch_id: str) -> dict[str, Any] | None:
    """The batch's record; ``files`` is the list of its file ids."""
    found = b.collection(CATALOG).get(ids=[f"batch:{batch_id}"], include=["metadatas"])
    if not found["ids"]:
        return None
    record = dict(found["metadatas"][0])
    record["files"] = orjson.loads(record.get("files", "[]"))
    return record
