"""What retrieval needs from the embedder: unit vectors for batches of chunks and for queries."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Vectors(Protocol):
    """Blocking calls: retrieval runs them in its own bounded pool."""

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


class MiniLMVectors:
    """all-MiniLM-L6-v2 through sentence-transformers; recent query vectors are remembered."""

    def __init__(self, model: Any, cache_size: int = 4096) -> None:
        self.model = model
        self.cache_size = cache_size
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # called from several pool threads

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            known = self._queries.get(text)
            if known is not None:
                self._queries.move_to_end(text)
                return known
        vector: np.ndarray = self.encode([text], 1)[0]
        with self._lock:
            self._queries[text] = vector
            if len(self._queries) > self.cache_size:
                self._queries.popitem(last=False)
        return vector
