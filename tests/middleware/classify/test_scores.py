"""The fast scorer's shortcuts (word splitting in bytes, substring and pattern searches skipped when a
character they need is missing, evidence not found left out) give exactly the scores, to the last bit, and
so the classes of the plain computation: every word list, substring and pattern searched for in turn."""

from __future__ import annotations

import itertools
import random

from middleware.classify.config import ClassifierConfig
from middleware.classify.scorer import (
    LONG_PASTE_CHARS,
    SHORT_CHARS,
    WINDOW_CHARS,
    WORD_PROBLEM_CHARS,
    RuleScorer,
)
from middleware.classify.signals import (
    COUNTING,
    LENGTH_UNITS,
    MARKS,
    NUMBER_WORDS,
    NUMBERS,
    PAGE_COUNTS,
    PAGE_UNITS,
    PHRASES,
    PUNCTUATION,
    STEMS,
    WORDS,
)
from tests.middleware.classify.test_classify import HELD_OUT, TUNING, labelled

# A configured class, and a weight whose sums depend on the order they are added in.
CUSTOM = ClassifierConfig(
    signals={"code": (r"\bansible\b", r"k8s|helm"), "translation": (r"\btranslate\b", r"ΣΑΣ|x\.py")},
    signal_weight=0.1,
)


def plain_scores(scorer: RuleScorer, full: str) -> dict[str, float]:
    text = (
        full
        if len(full) <= WINDOW_CHARS
        else full[: WINDOW_CHARS * 3 // 4] + "\n" + full[-WINDOW_CHARS // 4 :]
    )
    lower = text.lower()
    words = lower.translate(PUNCTUATION).split()
    spaced = " " + " ".join(words)
    distinct = set(words)
    scores = dict.fromkeys(scorer.order, 0.0)
    if not NUMBER_WORDS.isdisjoint(distinct) or any(map(str.isdigit, spaced)):
        scores["reasoning"] += COUNTING[0] * min(2, sum(p in spaced for p in COUNTING[1]))
    for name, (weight, most, vocabulary) in WORDS.items():
        scores[name] += weight * min(most, len(vocabulary & distinct))
    for name, (weight, stems) in STEMS.items():
        scores[name] += weight if any(" " + stem in spaced for stem in stems) else 0.0
    for name, (weight, phrases) in PHRASES.items():
        scores[name] += weight * min(2, sum(p in spaced for p in phrases))
    for name, (weight, most, marks) in MARKS.items():
        scores[name] += weight * min(most, sum(m in lower for m in marks))
    for name, found in scorer.patterns.items():
        for pattern, weight, most in found:
            if hits := len(pattern.findall(text)):
                scores[name] += weight * min(most, hits)
    if len(full) <= 2 * WORD_PROBLEM_CHARS:
        pattern, weight, most = NUMBERS
        weight /= 1 if len(full) <= WORD_PROBLEM_CHARS else 2
        scores["reasoning"] += weight * min(most, len(pattern.findall(text)))
    if "```" in full or "~~~" in full:
        scores["code"] += 6
    pairs = list(itertools.pairwise(words))
    if any(b in LENGTH_UNITS and a.isdigit() and len(a) >= 3 for a, b in pairs):
        scores["long"] += 5
    if any(b in PAGE_UNITS and (a.isdigit() or a in NUMBER_WORDS or a in PAGE_COUNTS) for a, b in pairs):
        scores["long"] += 3
    if scores["code"] < 4:
        scores["long"] += sum(2 for limit in LONG_PASTE_CHARS if len(full) > limit)
    if len(full) < SHORT_CHARS:
        scores["short"] += 1
    return scores


def plain_pick(scorer: RuleScorer, scores: dict[str, float]) -> str:
    best = max(scorer.order, key=lambda c: (scores[c], -scorer.order.index(c)))
    return best if scores[best] > 0 else scorer.default


def corpus() -> list[str]:
    """The labelled prompts, and texts made of the scorer's own evidence, in odd cases and scripts."""
    texts = [row["prompt"] for row in labelled(TUNING) + labelled(HELD_OUT)]
    vocabulary = [w for _, _, found in WORDS.values() for w in sorted(found)]
    vocabulary += [s for _, found in STEMS.values() for s in found] + [
        p for _, found in PHRASES.values() for p in found
    ]
    vocabulary += [*COUNTING[1], *MARKS["code"][2], *sorted(NUMBER_WORDS), *sorted(PAGE_UNITS | LENGTH_UNITS)]
    vocabulary += ["```", "~~~", "def ", "SELECT ", "x.py", "`a`", "3 + 4", "2024-05-20", "5 - 2", "40%", "9 km/h",
                   "√2", "x^2", "{", ";", "1000", "12", "٣", "²", "ΣΑΣ", "İ", "K", "«sí»", "¿qué?", "\u00a0", "\ud800",
                   "ansible", "k8s", "translate", "STEP BY STEP", "How Many"]  # fmt: skip
    rng = random.Random(11)
    for _ in range(4000):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 30))]
        texts.append("".join(w + rng.choice([" ", " ", "\n", ", ", ".", "\t", "", "\n    "]) for w in words))
    texts += [(rng.choice(texts) + " ") * rng.randint(5, 40) for _ in range(100)]  # past the window
    return texts


def test_scores_and_classes_are_those_of_the_plain_computation() -> None:
    texts = corpus()
    for cfg in (ClassifierConfig(), CUSTOM):
        scorer = RuleScorer(cfg)
        picked, scored = set(), set()
        for text in texts:
            plain = plain_scores(scorer, text)
            assert scorer.scores(text) == plain, repr(text[:300])
            assert list(scorer.scores(text)) == list(plain)
            assert scorer.pick(text) == plain_pick(scorer, plain), repr(text[:300])
            picked.add(plain_pick(scorer, plain))
            scored.update(name for name, score in plain.items() if score > 0)
        # Every class wins some texts and the configured one scores in some: every kind of evidence is
        # weighed, so the checks above can fail.
        assert picked >= {"short", "long", "code", "reasoning"} and scored == set(scorer.order)


def test_the_plain_computation_tells_a_missing_substring_apart() -> None:
    # A control for the test above: dropping one phrase from the scorer's search changes some scores.
    scorer = RuleScorer(ClassifierConfig())
    texts = ["please explain it step by step", "write a cover letter", "how do you spell necessary"]
    assert [scorer.scores(t) for t in texts] == [plain_scores(scorer, t) for t in texts]
    weight, phrases = PHRASES["reasoning"]
    PHRASES["reasoning"] = (weight, tuple(p for p in phrases if p != "step by step"))
    try:
        assert scorer.scores(texts[0]) != plain_scores(scorer, texts[0])
    finally:
        PHRASES["reasoning"] = (weight, phrases)
