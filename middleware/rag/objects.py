"""OpenAI's object shapes for files, vector stores, their files, batches and search results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from middleware.rag.catalog import FileRecord, StoreFile, StoreRecord
from middleware.rag.search import Passage


def file_object(f: FileRecord) -> dict[str, Any]:
    return {
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at, "filename": f.filename,
        "purpose": f.purpose, "status": "processed", "expires_at": None, "status_details": None,
    }  # fmt: skip


def counts(total: int, failed: int = 0) -> dict[str, int]:
    return {"in_progress": 0, "completed": total - failed, "failed": failed, "cancelled": 0, "total": total}


def store_object(s: StoreRecord, files: Sequence[StoreFile]) -> dict[str, Any]:
    return {
        "id": s.id, "object": "vector_store", "created_at": s.created_at, "name": s.name,
        "usage_bytes": sum(f.bytes for f in files), "file_counts": counts(len(files)), "status": "completed",
        "expires_after": None, "expires_at": None, "last_active_at": s.created_at, "metadata": s.metadata,
    }  # fmt: skip


def store_file_object(f: StoreFile) -> dict[str, Any]:
    return {
        "id": f.file_id, "object": "vector_store.file", "usage_bytes": f.bytes, "created_at": f.created_at,
        "vector_store_id": f.store_id, "status": "completed", "last_error": None,
        "chunking_strategy": f.chunking, "attributes": f.attributes,
    }  # fmt: skip


def batch_object(batch_id: str, store_id: str, created_at: int, total: int, failed: int) -> dict[str, Any]:
    return {
        "id": batch_id, "object": "vector_store.files_batch", "created_at": created_at,
        "vector_store_id": store_id, "status": "completed" if not failed else "failed",
        "file_counts": counts(total, failed),
    }  # fmt: skip


def search_page(query: str, passages: Sequence[Passage]) -> dict[str, Any]:
    data = [
        {"file_id": p.file_id, "filename": p.filename, "score": p.score, "attributes": p.attributes,
         "content": [{"type": "text", "text": p.text}]}
        for p in passages
    ]  # fmt: skip
    return {"object": "vector_store.search_results.page", "search_query": [query], "data": data,
            "has_more": False, "next_page": None}  # fmt: skip


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "deleted": True}


def page(
    items: list[dict[str, Any]], limit: int, order: str, after: str | None, before: str | None
) -> dict[str, Any]:
    """A cursor page over ``items`` sorted by creation, as OpenAI's list endpoints return."""
    items = sorted(items, key=lambda o: (o["created_at"], o["id"]), reverse=order == "desc")
    ids = [o["id"] for o in items]
    if after in ids:
        items = items[ids.index(after) + 1 :]
    elif before in ids:
        items = items[: ids.index(before)][-limit:]
    shown = items[:limit]
    return {
        "object": "list", "data": shown, "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None, "has_more": len(items) > limit,
    }  # fmt: skip
