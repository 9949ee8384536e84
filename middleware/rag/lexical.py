"""BM25 over a store's chunks, with bm25s.

bm25s computes its scores at indexing time, so it cannot add or remove one document: the index is rebuilt
from the store's chunks and swapped in whole, while queries keep using the previous one. A rebuild reuses
the terms of the chunks it already had, so only new chunks are analysed (on SciFact's 5k abstracts the
index itself takes about 0.3 s of CPU, the analysis of every text 0.4-0.5 s more). Deleted chunks are
masked out at once, before the rebuild. Text is lowercased, split into words of two letters or more,
stripped of English stop words and Snowball-stemmed, the recipe of the published bm25s runs on BEIR.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

WORD = re.compile(r"(?u)\b\w\w+\b")


class Analyzer:
    """Text to BM25 terms. Stems are remembered: a corpus repeats its words many times."""

    def __init__(self) -> None:
        import Stemmer  # PyStemmer
        from bm25s.stopwords import STOPWORDS_EN

        self._stemmer = Stemmer.Stemmer("english")
        self._stop = frozenset(STOPWORDS_EN)
        self._stems: dict[str, str] = {}

    def terms(self, text: str) -> list[str]:
        out = []
        for word in WORD.findall(text.lower()):
            if word in self._stop:
                continue
            stem = self._stems.get(word)
            if stem is None:
                stem = self._stems[word] = self._stemmer.stemWord(word)
            out.append(stem)
        return out


class Bm25Index:
    """One immutable bm25s index over ``len(texts)`` rows; rows are the store snapshot's rows."""

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self.size = size

    @classmethod
    def build(cls, analyzer: Analyzer, texts: Sequence[str], k1: float, b: float) -> Bm25Index:
        """Blocking: run it off the event loop."""
        return cls.from_terms([analyzer.terms(t) for t in texts], k1, b)

    @classmethod
    def from_terms(cls, terms: Sequence[list[str]], k1: float, b: float) -> Bm25Index:
        """Blocking: the index over rows already analysed (``Analyzer.terms`` of each text)."""
        import bm25s

        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        if terms:
            model.index(list(terms), show_progress=False)
        return cls(model, len(terms))

    def scores(self, analyzer: Analyzer, query: str) -> np.ndarray:
        """A score per row; rows without a query term score 0."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        ids = self.model.get_tokens_ids(analyzer.terms(query))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)

    def save(self, directory: Path) -> None:
        if self.size:
            self.model.save(str(directory))

    @classmethod
    def load(cls, directory: Path, size: int) -> Bm25Index:
        import bm25s

        model = bm25s.BM25.load(str(directory), mmap=False)
        if int(model.scores["num_docs"]) != size:
            raise ValueError("the saved BM25 index does not match the store")
        return cls(model, size)


def top(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[int]:
    """Rows of the ``k`` best positive scores, best first, among rows the mask allows."""
    if mask is not None:
        scores = np.where(mask, scores, 0.0)
    k = min(k, int(np.count_nonzero(scores > 0)))
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in best[np.argsort(-scores[best], kind="stable")]]
