"""Reciprocal rank fusion: each retriever's ranking votes ``weight / (k + rank)`` for every item in it.

RRF needs no score calibration between BM25 (unbounded) and cosine similarity; its ``k`` and the weights
are tuned on held-apart queries (``python -m bench.rag``), because fusing a weak and a strong retriever
with equal weights can rank below the strong one alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def rrf(rankings: Sequence[Sequence[T]], weights: Sequence[float], k: float = 60.0) -> list[tuple[T, float]]:
    """Items of all ``rankings`` (best first each) by fused score, best first; ties keep first-seen order."""
    fused: dict[T, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight <= 0:
            continue
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda pair: pair[1], reverse=True)
