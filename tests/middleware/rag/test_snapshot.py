"""Assembling a store's snapshot: a rebuild analyses only the chunks that are new, and scores as a build
from scratch would."""

from __future__ import annotations

import numpy as np

from middleware.rag.lexical import Analyzer
from middleware.rag.snapshot import Collected, Snapshot, assemble

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


def first(chunks: dict[str, str], analyzer: Analyzer) -> Snapshot:
    found = Collected(list(chunks), {cid: (text, {}) for cid, text in chunks.items()})
    return assemble("g1", Snapshot.empty(), found, analyzer, 1.5, 0.75)


def test_a_rebuild_analyses_only_new_chunks_and_scores_like_a_fresh_build() -> None:
    counting = CountingAnalyzer()
    old = first(CHUNKS, counting)
    counting.analysed.clear()
    # Chroma now holds the old chunks but the marathon, and one new chunk.
    current = ["reactor:0", "bananas:0", "glorp:0"]
    fresh = assemble("g2", old, Collected(current, {"glorp:0": (NEW["glorp:0"], {})}), counting, 1.5, 0.75)
    assert counting.analysed == [NEW["glorp:0"]]
    assert fresh.ids == current and fresh.generation == "g2" and fresh.alive.all()
    scratch = first({cid: {**CHUNKS, **NEW}[cid] for cid in current}, Analyzer())
    for query in ("glorpfish lagoon", "helium reactor", "potassium"):
        assert np.allclose(fresh.bm25.scores(counting, query), scratch.bm25.scores(counting, query))


def test_a_snapshot_loaded_without_terms_analyses_its_texts_again() -> None:
    old = first(CHUNKS, Analyzer())
    loaded = Snapshot(old.generation, old.ids, old.texts, old.metas, old.bm25, old.alive.copy())
    counting = CountingAnalyzer()
    fresh = assemble(
        "g2", loaded, Collected([*CHUNKS, *NEW], {"glorp:0": (NEW["glorp:0"], {})}), counting, 1.5, 0.75
    )
    assert sorted(counting.analysed) == sorted([*CHUNKS.values(), *NEW.values()])
    assert fresh.bm25.scores(counting, "glorpfish").argmax() == 3


def test_an_unchanged_store_keeps_its_index() -> None:
    old = first(CHUNKS, Analyzer())
    same = assemble("g2", old, Collected(list(CHUNKS), {}), Analyzer(), 1.5, 0.75)
    assert same.bm25 is old.bm25 and same.generation == "g2"
