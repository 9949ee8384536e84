"""A stand-in for MiniLM in tests that need vectors but not their meaning."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class CountingModel:
    """Stands in for MiniLM: a fixed unit vector per text, counting the calls and where they ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[str] = set()

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = True) -> Any:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        rng = np.random.default_rng(sum(map(ord, texts[0])))
        vector = rng.standard_normal((1, 384)).astype(np.float32)
        return vector / np.linalg.norm(vector)
