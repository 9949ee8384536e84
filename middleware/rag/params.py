"""The vector store API's request parameters: validated, or a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from middleware.rag.chunking import ChunkSpec
from middleware.rag.config import MODEL_MAX_TOKENS
from proxy.errors import InvalidRequest

MAX_ATTRIBUTES = 16
# OpenAI's rankers, and the search mode each means here. There is no re-ranking model: "auto" and the
# dated default are the hybrid ranking (dense and BM25 fused by rank); "none" turns re-ranking off, so
# results come in the order of their score, the cosine similarity, which is the dense ranking alone.
RANKERS = {"auto": "fused", "default-2024-11-15": "fused", "none": "dense"}


def paging(request: Request, most: int = 100) -> tuple[int, str, str | None, str | None]:
    q = request.query_params
    limit = q.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= most:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {most}.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    return int(limit), order, q.get("after"), q.get("before")


def strings(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"'{param}' must be a list of ids.", param=param)
    return value


def attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise InvalidRequest(
            f"'attributes' must be an object of at most {MAX_ATTRIBUTES} keys.", param="attributes"
        )
    for key, v in value.items():
        if (
            len(key) > 64
            or not isinstance(v, str | int | float | bool)
            or (isinstance(v, str) and len(v) > 512)
        ):
            raise InvalidRequest(
                "'attributes' keys are at most 64 characters; values are strings (at most 512 characters), "
                "numbers or booleans.",
                param="attributes",
            )
    return dict(value)


def chunking(value: Any) -> ChunkSpec | None:
    """OpenAI's chunking strategy: ``auto`` (the configured chunking) or ``static``, clamped to what the
    embedding model reads (254 word pieces, overlap at most half)."""
    if value is None or (isinstance(value, dict) and value.get("type") == "auto"):
        return None
    static = value.get("static") if isinstance(value, dict) and value.get("type") == "static" else None
    size = static.get("max_chunk_size_tokens") if isinstance(static, dict) else None
    overlap = static.get("chunk_overlap_tokens") if isinstance(static, dict) else None
    if not isinstance(size, int) or not isinstance(overlap, int) or not 100 <= size <= 4096 or overlap < 0:
        raise InvalidRequest(
            '\'chunking_strategy\' must be {"type": "auto"} or {"type": "static", "static": '
            '{"max_chunk_size_tokens": 100-4096, "chunk_overlap_tokens": >= 0}}.',
            param="chunking_strategy",
        )
    if overlap * 2 > size:
        raise InvalidRequest("'chunk_overlap_tokens' must be at most half of 'max_chunk_size_tokens'.",
                             param="chunking_strategy")  # fmt: skip
    return ChunkSpec(size, overlap).clamped(MODEL_MAX_TOKENS)


def ranking(value: Any) -> tuple[str, float]:
    """``ranking_options``: the search mode its ``ranker`` names, and its ``score_threshold``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidRequest("'ranking_options' must be an object.", param="ranking_options")
    ranker = value.get("ranker", "auto")
    if ranker not in RANKERS:
        raise InvalidRequest(
            f"'ranking_options.ranker' must be one of {', '.join(RANKERS)}.", param="ranking_options.ranker"
        )
    threshold = value.get("score_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise InvalidRequest(
            "'ranking_options.score_threshold' must be from 0 to 1.", param="ranking_options.score_threshold"
        )
    return RANKERS[ranker], float(threshold)
