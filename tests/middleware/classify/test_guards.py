"""A pattern's required characters: a text without any of them is never one the pattern matches, so the
scorer that skips such searches gives the scores of the one that runs them all."""

from __future__ import annotations

import random
import re

from middleware.classify.config import ClassifierConfig
from middleware.classify.guards import may_match, required_chars
from middleware.classify.scorer import RuleScorer
from middleware.classify.signals import NUMBERS, PATTERNS
from tests.middleware.classify.test_classify import HELD_OUT, TUNING, labelled

BUILT_IN = [pattern for found in PATTERNS.values() for pattern, _, _ in found] + [NUMBERS[0]]
# Shapes the guard must reason about soundly, beyond the built-in patterns.
SHAPES = [r"ab|cd", r"a(?:b|c)+d", r"x*y", r"(?:ab)?c", r"[a-f]{2}", r"[^a]b", r"(?=q)u", r"(a)\1",
          r"a|\d", r"(?m)^def ", r"(?s)a.b", r"(?>ab)c", r"a{0,3}", r"(?:x|y){1,2}", r"%|\^\d"]  # fmt: skip


def corpus() -> list[str]:
    texts = [row["prompt"] for row in labelled(TUNING) + labelled(HELD_OUT)]
    rng = random.Random(7)
    alphabet = "ab cdxyq%^.;{}`=+-*/<>2 3\tπ√°kmdef\n()"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    return texts


def test_no_text_a_pattern_matches_lacks_its_required_characters() -> None:
    texts = corpus()
    skipped = 0
    for pattern in BUILT_IN + [re.compile(shape) for shape in SHAPES]:
        needs = required_chars(pattern)
        for text in texts:
            if pattern.search(text) is not None:
                assert may_match(needs, text), (pattern.pattern, text)
            skipped += not may_match(needs, text)
    assert skipped > 1000, "the guards skip searches (the check above can fail)"


def test_what_a_guard_knows_and_what_it_leaves_alone() -> None:
    assert required_chars(re.compile(r"ab|cd")) == frozenset("ac")
    assert required_chars(re.compile(r"[;{}][ \t]*$")) == frozenset(";{}")
    assert required_chars(re.compile(r"x*y")) == frozenset("y")
    # Nothing every match must hold, or nothing it can tell: no guard, the pattern is always searched.
    for shape in (r"a|\d", r"x*", r"(?:ab)?", r"[^a]", r"\d+", r"(?i)abc", r"(?i:a)b?", r"."):
        assert required_chars(re.compile(shape)) is None, shape
    assert required_chars(re.compile("[" + "".join(map(chr, range(0x41, 0x61))) + "]")) is None  # too many


def test_scores_are_those_of_searching_every_pattern() -> None:
    guarded = RuleScorer(ClassifierConfig(signals={"code": (r"\bansible\b", r"k8s|helm")}))
    plain = RuleScorer(ClassifierConfig(signals={"code": (r"\bansible\b", r"k8s|helm")}))
    plain._searches = [(name, pattern, w, most, None) for name, pattern, w, most, _ in plain._searches]
    assert any(needs for *_, needs in guarded._searches)
    for text in corpus():
        assert guarded.scores(text) == plain.scores(text), text
