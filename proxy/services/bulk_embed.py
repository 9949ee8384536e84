"""Embedding many texts at once (document chunks) on several cores: one forward pass per worker thread.

Why not torch's own threads: intra-op threads meet at a barrier in every layer, so on 2 idle cores two of
them gave only 1.5x one (a batch of 956 chunks: 20 s against 30 s), and on a busy machine a preempted one
stalls the rest. Here each worker runs whole batches with one torch thread; ATen's kernels release the GIL,
so workers only meet at the queue, and a worker more than the idle cores costs no CPU, only its share of
time. SciFact's 10,075 chunks on 2 idle cores: 147 s with 273 s of CPU (1.86 cores busy).

The texts are tokenized once, up front, with a private copy of the model's tokenizer (the model's own one
has its truncation and padding reset on every call, which is not safe across threads), then sorted by
length in word pieces and cut into batches, so a batch pads little. sentence-transformers sorts by length
in characters: on SciFact that padded ~20 % of the word pieces of a 256-document write, this ~3 %.

The pool's queue is first come, first served across calls: the batches of the next call queue up behind
the current one's, so while the caller writes one call's vectors, the workers are already on the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# One forward pass: features (input_ids, attention_mask, token_type_ids) to sentence vectors.
Forward = Callable[[Mapping[str, Any]], Any]


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the process's setting too (``load_minilm``); a worker must not spawn more


def private_tokenizer(model: Any) -> Any:
    """A copy of a sentence-transformers model's fast tokenizer, truncating at the model's limit and never
    padding (batches are padded here, to their own longest text)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.enable_truncation(max_length=model.max_seq_length)
    tokenizer.no_padding()
    return tokenizer


class BulkEncoder:
    """Unit float32 vectors for many texts, in token-length-sorted batches, on ``workers`` threads."""

    def __init__(self, forward: Forward, tokenizer: Any, workers: int, precision: str = "float32") -> None:
        self.forward = forward
        self.tokenizer = tokenizer
        self.workers = max(1, workers)
        self.precision = precision
        self._pool = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="fluido-embed-bulk", initializer=_one_torch_thread
        )

    @classmethod
    def for_model(cls, model: Any, workers: int, precision: str) -> BulkEncoder:
        """For a sentence-transformers model (its ``__call__`` is the forward pass)."""
        return cls(model, private_tokenizer(model), workers, precision)

    async def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """One row per text, in order. Cancelled or failed: the batches not yet started are dropped (a
        batch under way finishes on its worker)."""
        loop = asyncio.get_running_loop()
        batches = await loop.run_in_executor(self._pool, self.batches, texts, batch_size)
        futures = [self._pool.submit(self._run, features) for _, features in batches]
        try:
            results = await asyncio.gather(*map(asyncio.wrap_future, futures))
        except BaseException:
            for future in futures:  # at once: through asyncio's wrappers it would take a loop turn
                future.cancel()
            raise
        out = np.empty((len(texts), results[0].shape[1] if results else 0), dtype=np.float32)
        for (rows, _), vectors in zip(batches, results, strict=True):
            out[rows] = vectors
        return out

    def batches(self, texts: list[str], batch_size: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Blocking: (rows, features) per batch, longest texts first."""
        import torch

        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        out = []
        for start in range(0, len(order), max(1, batch_size)):
            rows = order[start : start + batch_size]
            ids = np.zeros((len(rows), int(lengths[rows[0]])), dtype=np.int64)  # 0 is [PAD]
            for i, row in enumerate(rows):
                ids[i, : lengths[row]] = encodings[row].ids
            mask = (np.arange(ids.shape[1]) < lengths[rows][:, None]).astype(np.int64)
            features = {
                "input_ids": torch.from_numpy(ids),
                "attention_mask": torch.from_numpy(mask),
                "token_type_ids": torch.zeros_like(torch.from_numpy(ids)),
            }
            out.append((rows, features))
        return out

    def _run(self, features: Mapping[str, Any]) -> np.ndarray:
        """In a worker: one batch's unit vectors, normalized in float32 (under autocast the model's own
        normalization may round in bfloat16)."""
        import torch

        with torch.inference_mode(), self._autocast():
            raw = self.forward(dict(features))["sentence_embedding"]
        vectors = raw.float().numpy()
        out: np.ndarray = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return out

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision != "bfloat16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
