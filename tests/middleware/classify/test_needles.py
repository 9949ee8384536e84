"""The scorer's substring index finds exactly what searching for every substring finds."""

from __future__ import annotations

from middleware.classify.scorer import Needles
from middleware.classify.signals import COUNTING, PHRASES, STEMS
from tests.middleware.classify.test_classify import HELD_OUT, TUNING, labelled

GROUPS = (COUNTING[1], *(tuple(" " + s for s in stems) for _, stems in STEMS.values()),
          *(phrases for _, phrases in PHRASES.values()))  # fmt: skip


def plain_counts(text: str) -> list[int]:
    return [sum(needle in text for needle in group) for group in GROUPS]


def test_needles_count_what_plain_searches_count() -> None:
    needles = Needles(GROUPS)
    texts = [" " + row["prompt"].lower() for row in labelled(TUNING) + labelled(HELD_OUT)]
    # Every needle alone, and with its rarest character missing, must count as a plain search does.
    texts += [" " + needle for group in GROUPS for needle in group]
    texts += [text.replace("q", "") for text in texts[:50]] + ["", " ", "ñ ü é", "x" * 2000]
    found = [needles.counts(text, set(text)) for text in texts]
    assert found == [plain_counts(text) for text in texts]
    assert any(any(counts) for counts in found), "some texts hold some needles (the check can fail)"


def test_a_phrase_is_found_with_its_rarest_character_and_not_without() -> None:
    needles = Needles((("step by step",), ("by",)))
    assert needles.counts(" do it step by step", set(" do it step by step")) == [1, 1]
    # "y" is the rarest character of both: a text without one holds neither.
    assert needles.counts(" step b step", set(" step b step")) == [0, 0]
