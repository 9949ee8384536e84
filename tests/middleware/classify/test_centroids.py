"""The embeddings mode: nearest centroid over all-MiniLM-L6-v2, compared with the fast scorer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from middleware.classify.centroids import CentroidClassifier
from proxy.parsing import parse_chat

DATA = Path(__file__).resolve().parents[2] / "data" / "query_classes.jsonl"


@pytest.fixture(scope="module")
def centroids() -> Iterator[CentroidClassifier]:
    classifier = CentroidClassifier({}, "short")
    yield classifier
    classifier.close()


def test_the_embedding_classifier_beats_chance_by_far_on_the_labelled_set(
    centroids: CentroidClassifier,
) -> None:
    rows = [orjson.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    right = sum(centroids.pick(r["prompt"]) == r["class"] for r in rows)
    assert right / len(rows) >= 0.6  # chance is 0.25


def test_classification_runs_off_the_event_loop_and_is_cached(centroids: CentroidClassifier) -> None:
    req = parse_chat(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "Prove that 7 is prime."}]})
    )

    async def twice() -> tuple[str, str]:
        return await centroids.classify(req), await centroids.classify(req)

    first, second = asyncio.run(twice())
    assert first == second == "reasoning"
    assert "Prove that 7 is prime." in centroids._cache


def test_configured_examples_replace_the_built_in_ones(centroids: CentroidClassifier) -> None:
    custom = CentroidClassifier(
        {"billing": ("my invoice is wrong", "refund my payment"), "other": ("tell me a joke", "what's up")},
        "other",
        model=centroids.model,
    )
    try:
        assert custom.pick("I was charged twice, I want my money back") == "billing"
    finally:
        custom.close()
