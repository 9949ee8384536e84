"""BM25 over chunks (bm25s, Snowball stems, English stop words)."""

from __future__ import annotations

import numpy as np
import pytest

from middleware.rag.lexical import Analyzer, Bm25Index, top

TEXTS = [
    "The reactor is cooled by liquid helium.",
    "Bananas grow in tropical climates and are rich in potassium.",
    "Running a marathon requires months of training.",
]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


def test_terms_are_stemmed_and_stop_words_dropped(analyzer: Analyzer) -> None:
    assert analyzer.terms("The runners and the running") == ["runner", "run"]


def test_the_document_with_the_query_terms_ranks_first(analyzer: Analyzer) -> None:
    index = Bm25Index.build(analyzer, TEXTS, 1.5, 0.75)
    assert top(index.scores(analyzer, "how is the reactor cooled?"), 3) == [0]
    assert top(index.scores(analyzer, "I ran a marathon"), 3) == [2]  # ran -> ran; marathon matches


def test_a_masked_row_is_never_returned(analyzer: Analyzer) -> None:
    index = Bm25Index.build(analyzer, TEXTS, 1.5, 0.75)
    scores = index.scores(analyzer, "reactor bananas")
    assert set(top(scores, 3)) == {0, 1}
    assert top(scores, 3, mask=np.array([False, True, True])) == [1]


def test_a_query_of_unknown_or_stop_words_scores_nothing(analyzer: Analyzer) -> None:
    index = Bm25Index.build(analyzer, TEXTS, 1.5, 0.75)
    assert top(index.scores(analyzer, "the of and"), 3) == []
    assert top(index.scores(analyzer, "zyxwv"), 3) == []


def test_a_saved_index_loads_with_the_same_scores(analyzer: Analyzer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    index = Bm25Index.build(analyzer, TEXTS, 1.5, 0.75)
    index.save(tmp_path / "bm25")
    loaded = Bm25Index.load(tmp_path / "bm25", len(TEXTS))
    query = "reactor helium marathon"
    assert np.allclose(loaded.scores(analyzer, query), index.scores(analyzer, query))
    with pytest.raises(ValueError):
        Bm25Index.load(tmp_path / "bm25", len(TEXTS) + 1)
