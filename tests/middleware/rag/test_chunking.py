"""Chunking in MiniLM's own word pieces."""

from __future__ import annotations

import itertools

import pytest

from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from proxy.services.embedder import bundled_minilm_path

SENTENCE = "Helium keeps the Zorblax reactor at four kelvin during the night shift. "


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(254, 48))


def test_a_short_text_is_one_chunk(chunker: Chunker) -> None:
    assert chunker.split("  A short note.  ") == ["A short note."]
    assert chunker.split("   ") == []


def test_every_chunk_fits_the_model_and_the_whole_text_is_covered(chunker: Chunker) -> None:
    text = SENTENCE * 60  # ~900 word pieces
    chunks = chunker.split(text)
    assert len(chunks) >= 4
    assert all(chunker.count(c) <= 254 for c in chunks)
    assert chunks[0].startswith("Helium") and text.strip().endswith(chunks[-1][-30:])


def test_chunks_end_at_sentence_ends_and_neighbours_overlap(chunker: Chunker) -> None:
    chunks = chunker.split(SENTENCE * 60)
    assert all(c.endswith(".") for c in chunks[:-1])
    for left, right in itertools.pairwise(chunks):
        tail = left.split()[-5:]
        assert " ".join(tail) in right, "the next chunk repeats the end of the previous one"


def test_without_overlap_nothing_repeats(chunker: Chunker) -> None:
    words = " ".join(f"w{i}" for i in range(600))  # every word distinct, no sentence ends
    chunks = chunker.split(words, ChunkSpec(100, 0))
    seen = [w for c in chunks for w in c.split()]
    assert seen == words.split()
    assert all(chunker.count(c) <= 100 for c in chunks)


def test_a_static_strategy_is_clamped_to_the_model_limit() -> None:
    assert ChunkSpec(800, 400).clamped(254) == ChunkSpec(254, 127)
    assert ChunkSpec(200, 50).clamped(254) == ChunkSpec(200, 50)
