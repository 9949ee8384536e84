"""The scorer's word splitting gives the words of replacing punctuation by spaces and splitting."""

from __future__ import annotations

import random

from middleware.classify.reading import words_of
from middleware.classify.signals import PUNCTUATION
from tests.middleware.classify.test_classify import HELD_OUT, TUNING, labelled

# Every punctuation character, ASCII or not, with accented letters, other spaces and a lone surrogate.
ALPHABET = [chr(c) for c in PUNCTUATION] + list("ab ZéÑ\u00a0\u2028\x1c\x85€ß\ud800\U0001d518")


def test_words_are_those_of_translating_punctuation_and_splitting() -> None:
    rng = random.Random(3)
    texts = [row["prompt"].lower() for row in labelled(TUNING) + labelled(HELD_OUT)]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    texts += ["", " ", "«hola»", "¿qué?", "“quoted”", "x\ud800y"]
    for text in texts:
        assert words_of(text) == text.translate(PUNCTUATION).split(), repr(text)
    # Punctuation does split words (the check above can fail): a plain split keeps "«hola»,mundo" whole.
    assert words_of("«hola»,mundo") == ["hola", "mundo"] != ["«hola»,mundo"]
