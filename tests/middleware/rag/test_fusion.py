"""Reciprocal rank fusion."""

from __future__ import annotations

from middleware.rag.fusion import rrf


def test_an_item_ranked_well_by_both_beats_one_ranked_first_by_one() -> None:
    fused = rrf([["a", "b", "c"], ["b", "d", "a"]], [1.0, 1.0], k=60)
    assert [item for item, _ in fused][:2] == ["b", "a"]


def test_weights_tilt_the_order_toward_the_heavier_ranking() -> None:
    dense, lexical = ["d1", "d2"], ["l1", "l2"]
    assert rrf([dense, lexical], [0.8, 0.2], k=10)[0][0] == "d1"
    assert rrf([dense, lexical], [0.2, 0.8], k=10)[0][0] == "l1"


def test_a_zero_weight_ranking_contributes_nothing() -> None:
    fused = rrf([["a"], ["z"]], [1.0, 0.0], k=60)
    assert fused == [("a", 1 / 61)]


def test_scores_follow_the_formula() -> None:
    fused = dict(rrf([["a", "b"], ["b"]], [1.0, 2.0], k=5))
    assert fused["a"] == 1 / 6
    assert fused["b"] == 1 / 7 + 2 / 6
