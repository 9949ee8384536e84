"""Assembling a store's snapshot: a rebuild analyses only the chunks that are new, scores as a build
from scratch would, and keeps each chunk's embedding on its row; saving and loading it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from middleware.rag.lexical import Analyzer
from middleware.rag.snapshot import Collected, Snapshot, assemble, load, save

CHUNKS = {
    "reactor:0": "The Zorblax reactor is cooled by liquid helium at four kelvin.",
    "bananas:0": "Bananas grow in tropical climates and are rich in potassium.",
    "marathon:0": "Training for a marathon takes months of long runs.",
}
NEW = {"glorp:0": "Glorpfish live only in the Quibble lagoon."}


class CountingAnalyzer(Analyzer):
    def __init__(self) -> None:
        super().__init__()
        self.analysed: list[str] = []

    def terms(self, text: str) -> list[str]:
        self.analysed.append(text)
        return super().terms(text)


def vector(chunk_id: str) -> np.ndarray:
    """A unit vector that names its chunk."""
    v = np.random.default_rng(sum(map(ord, chunk_id))).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


def collected(current: list[str], new: dict[str, str]) -> Collected:
    return Collected(current, {c: (t, {}) for c, t in new.items()}, {c: vector(c) for c in new})


def first(chunks: dict[str, str], analyzer: Analyzer) -> Snapshot:
    return assemble("g1", Snapshot.empty(), collected(list(chunks), chunks), analyzer, 1.5, 0.75)


def assert_vectors_on_their_rows(snap: Snapshot) -> None:
    assert snap.vectors.shape == (len(snap.ids), 8)
    for row, chunk_id in enumerate(snap.ids):
        assert np.array_equal(snap.vectors[row], vector(chunk_id)), chunk_id


def test_a_rebuild_analyses_only_new_chunks_and_scores_like_a_fresh_build() -> None:
    counting = CountingAnalyzer()
    old = first(CHUNKS, counting)
    counting.analysed.clear()
    # Chroma now holds the old chunks but the marathon, and one new chunk.
    current = ["reactor:0", "bananas:0", "glorp:0"]
    fresh = assemble("g2", old, collected(current, NEW), counting, 1.5, 0.75)
    assert counting.analysed == [NEW["glorp:0"]]
    assert fresh.ids == current and fresh.generation == "g2" and fresh.alive.all()
    assert_vectors_on_their_rows(fresh)  # the kept rows moved up over the marathon's, the new one appended
    scratch = first({cid: {**CHUNKS, **NEW}[cid] for cid in current}, Analyzer())
    for query in ("glorpfish lagoon", "helium reactor", "potassium"):
        assert np.allclose(fresh.bm25.scores(counting, query), scratch.bm25.scores(counting, query))


def test_a_snapshot_loaded_without_terms_analyses_its_texts_again() -> None:
    old = first(CHUNKS, Analyzer())
    loaded = Snapshot(old.generation, old.ids, old.texts, old.metas, old.bm25, old.alive.copy(), old.vectors)
    counting = CountingAnalyzer()
    fresh = assemble("g2", loaded, collected([*CHUNKS, *NEW], NEW), counting, 1.5, 0.75)
    assert sorted(counting.analysed) == sorted([*CHUNKS.values(), *NEW.values()])
    assert fresh.bm25.scores(counting, "glorpfish").argmax() == 3


def test_an_unchanged_store_keeps_its_index() -> None:
    old = first(CHUNKS, Analyzer())
    same = assemble("g2", old, collected(list(CHUNKS), {}), Analyzer(), 1.5, 0.75)
    assert same.bm25 is old.bm25 and same.generation == "g2"
    assert_vectors_on_their_rows(same)


def test_a_saved_snapshot_loads_with_its_embeddings(tmp_path: Path) -> None:
    analyzer = Analyzer()
    save(first(CHUNKS, analyzer), tmp_path / "store")
    loaded = load(tmp_path / "store")
    assert loaded is not None and loaded.ids == list(CHUNKS) and loaded.generation == "g1"
    assert_vectors_on_their_rows(loaded)
    assert loaded.bm25.scores(analyzer, "potassium").argmax() == 1


def test_a_snapshot_saved_without_embeddings_is_not_loaded(tmp_path: Path) -> None:
    """As one saved before snapshots held embeddings: the store is fetched from Chroma again instead."""
    save(first(CHUNKS, Analyzer()), tmp_path / "store")
    (tmp_path / "store" / "vectors.npy").unlink()
    assert load(tmp_path / "store") is None
