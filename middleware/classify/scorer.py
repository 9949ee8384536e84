"""Query classes: every chat request gets one (short, long, code, reasoning, or a configured one), and the
class's generation profile fills in what the client left unset.

The default scorer reads the last user turn and the request's shape with precompiled patterns: code
fences, stack traces, file names and language keywords for ``code``; math notation, "prove" and "step by
step" (in several languages) for ``reasoning``; an asked-for length, a document to summarise or a long
paste for ``long``; ``short`` otherwise. It costs microseconds. The optional embeddings mode
(``centroids.py``) compares the turn with example prompts instead.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Mapping
from typing import Protocol

from middleware.classify.compact import Compact
from middleware.classify.config import ClassifierConfig, Profile
from middleware.classify.guards import required_chars
from middleware.classify.reading import Needles, words_of
from middleware.classify.signals import (
    COUNTING,
    LENGTH_UNITS,
    MARKS,
    NUMBER_WORDS,
    NUMBERS,
    PAGE_COUNTS,
    PAGE_UNITS,
    PATTERNS,
    PHRASES,
    STEMS,
    WORDS,
)
from proxy.types import Call, ChatRequest, Handler, Reply

LONG_PASTE_CHARS = (600, 1500)  # a pasted document: evidence for long, unless it is code
SHORT_CHARS = 120
WORD_PROBLEM_CHARS = 300  # longer texts with numbers in them are reports, logs and data, not word problems
WINDOW_CHARS = 1600  # how much of a long turn is read: the cost stays flat however long the prompt
# Ties go to the class whose profile costs the least to get wrong for a small GPU.
PRIORITY = ("code", "reasoning", "long", "short")
# Classes of recent short texts are remembered (at most REMEMBERED * REMEMBERED_CHARS characters).
REMEMBERED = 4096
REMEMBERED_CHARS = 2000
_DIGITS = frozenset("0123456789")


def last_user_text(req: ChatRequest) -> str:
    for message in reversed(req.messages):
        if message.role == "user":
            if isinstance(message.content, str):
                return message.content
            if isinstance(message.content, list):
                return "\n".join(str(p.get("text", "")) for p in message.content if p.get("type") == "text")
    return ""


class Classifier(Protocol):
    """Gives a request its query class."""

    async def classify(self, req: ChatRequest) -> str: ...


class RuleScorer:
    """The fast default: evidence per class from words, phrases and structure; the highest score wins."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        self.default = cfg.default
        self.patterns = {name: list(found) for name, found in PATTERNS.items()}
        for name, extra in cfg.signals.items():
            flags = re.IGNORECASE | re.MULTILINE
            self.patterns.setdefault(name, []).extend(
                (re.compile(p, flags), cfg.signal_weight, 1) for p in extra
            )
        # Each pattern with the characters it cannot match without: most texts skip most searches. The
        # guard is checked against the lowercased text's characters, which hold every character of the
        # text that lowercasing leaves alone: a guard with any other character is dropped (always search).
        self._searches = [
            (name, pattern, weight, most, _caseless(required_chars(pattern)))
            for name, found in self.patterns.items()
            for pattern, weight, most in found
        ]
        self.order = [*PRIORITY, *(c for c in self.patterns if c not in PRIORITY)]
        # Stems match at a word's start: " stem" in the space-joined words. Built once, not per request.
        # Stems, phrases and counting phrases are all searched for in one pass over ``Needles``: group 0 is
        # the counting phrases, then each class's stems, then each class's phrases.
        stems = {name: (w, tuple(" " + stem for stem in found)) for name, (w, found) in STEMS.items()}
        groups = [COUNTING[1], *(found for _, found in stems.values()), *(p for _, p in PHRASES.values())]
        self._needles = Needles(tuple(groups))
        self._stem_groups = [(name, weight, 1 + i) for i, (name, (weight, _)) in enumerate(stems.items())]
        first = 1 + len(stems)
        self._phrase_groups = [(name, w, first + i) for i, (name, (w, _)) in enumerate(PHRASES.items())]
        self._marks = [(name, w, most, Needles((marks,))) for name, (w, most, marks) in MARKS.items()]
        # A text's class never changes: repeated questions (retries, cache hits) are not scored again.
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(self.pick)

    def scores(self, full: str) -> dict[str, float]:
        # The start says what is asked, the end often repeats it; a long middle is pasted material, read
        # only for code fences. So the cost stays flat however long the prompt.
        text = (
            full
            if len(full) <= WINDOW_CHARS
            else full[: WINDOW_CHARS * 3 // 4] + "\n" + full[-WINDOW_CHARS // 4 :]
        )
        lower = text.lower()
        words = words_of(lower)
        spaced = " " + " ".join(words)
        distinct = set(words)
        # The lowercased text's characters and a space: all those of ``spaced`` and of ``lower``, and all
        # those of ``text`` that lowercasing leaves alone (its digits among them). One set serves every
        # "can this occur at all" test below; a character too many only costs a search.
        chars = set(lower)
        chars.add(" ")
        scores = dict.fromkeys(self.order, 0.0)
        found = self._needles.counts(spaced, chars)
        # Every weight here is positive: evidence not found adds nothing, and is skipped. The set look-up
        # before the digit test: it is cheaper, and decides as often.
        if found[0] and (not NUMBER_WORDS.isdisjoint(distinct) or any(map(str.isdigit, chars))):
            scores["reasoning"] += COUNTING[0] * min(2, found[0])
        for name, (weight, most, vocabulary) in WORDS.items():
            scores[name] += weight * min(most, len(vocabulary & distinct))
        for name, weight, group in self._stem_groups:
            if found[group]:
                scores[name] += weight
        for name, weight, group in self._phrase_groups:
            if found[group]:
                scores[name] += weight * min(2, found[group])
        for name, weight, most, marks in self._marks:
            if hits := marks.counts(lower, chars)[0]:
                scores[name] += weight * min(most, hits)
        for name, pattern, weight, most, needs in self._searches:
            # Most patterns find nothing: one search says so, without making an iterator, and a text
            # without a character the pattern needs is not searched at all.
            if (needs is None or not needs.isdisjoint(chars)) and pattern.search(text) is not None:
                scores[name] += weight * min(most, len(pattern.findall(text)))
        # An ASCII text without an ASCII digit has no number in it (\d is any decimal digit in Unicode).
        if len(full) <= 2 * WORD_PROBLEM_CHARS and (not _DIGITS.isdisjoint(chars) or not text.isascii()):
            pattern, weight, most = NUMBERS
            weight /= 1 if len(full) <= WORD_PROBLEM_CHARS else 2
            scores["reasoning"] += weight * min(most, len(pattern.findall(text)))
        if "```" in full or "~~~" in full:
            scores["code"] += 6
        if LENGTH_UNITS & distinct and any(
            b in LENGTH_UNITS and a.isdigit() and len(a) >= 3 for a, b in itertools.pairwise(words)
        ):
            scores["long"] += 5  # "1000 words": an asked-for length
        if PAGE_UNITS & distinct and any(
            b in PAGE_UNITS and (a.isdigit() or a in NUMBER_WORDS or a in PAGE_COUNTS)
            for a, b in itertools.pairwise(words)
        ):
            scores["long"] += 3  # "two pages", "1 page": an asked-for length
        if len(full) > LONG_PASTE_CHARS[0] and scores["code"] < 4:
            scores["long"] += sum(2 for limit in LONG_PASTE_CHARS if len(full) > limit)
        if len(full) < SHORT_CHARS:
            scores["short"] += 1
        return scores

    def pick(self, text: str) -> str:
        scores = self.scores(text)
        # max() keeps the first of equal scores, and ``scores`` is in ``self.order``: ties go to PRIORITY.
        best = max(scores, key=scores.__getitem__)
        return best if scores[best] > 0 else self.default

    def pick_request(self, req: ChatRequest) -> str:
        """The request's class, without a coroutine: the scorer never waits."""
        text = last_user_text(req)
        return self._remembered(text) if len(text) <= REMEMBERED_CHARS else self.pick(text)

    async def classify(self, req: ChatRequest) -> str:
        return self.pick_request(req)


def _caseless(needs: frozenset[str] | None) -> frozenset[str] | None:
    return needs if needs is not None and all(c.lower() == c for c in needs) else None


def apply_profile(req: ChatRequest, profile: Profile) -> ChatRequest:
    """Fill in what the client left unset; a cap lowers even what it set."""
    max_tokens = req.max_tokens if req.max_tokens is not None else profile.max_tokens
    if profile.max_tokens_cap is not None:
        max_tokens = min(max_tokens or profile.max_tokens_cap, profile.max_tokens_cap)
    model = profile.model or req.model
    temperature = req.temperature if req.temperature is not None else profile.temperature
    if (
        model == req.model
        and max_tokens == req.max_tokens
        and temperature == req.temperature
        and profile.ollama_options == req.profile_ollama_options
        and profile.extra == req.profile_extra
    ):
        return req  # the profile changes nothing: copying a 20-field request costs more than classifying
    return dataclasses.replace(
        req,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        profile_ollama_options=profile.ollama_options,
        profile_extra=profile.extra,
    )


class Classify:
    """The chain link: classify, note the class, apply its profile (which may route to another alias), then
    compact the prompt to the class's budget when ``compact`` is given. One link for both, so a request
    crosses one coroutine frame here, and the usual prompt, which compaction leaves alone, costs one pass."""

    def __init__(
        self, classifier: Classifier, profiles: Mapping[str, Profile], compact: Compact | None = None
    ) -> None:
        self.classifier = classifier
        self.profiles = profiles
        self.compact = compact
        # The rule scorer never waits: called as it is, not through a coroutine of its own.
        self._pick = classifier.pick_request if isinstance(classifier, RuleScorer) else None

    async def __call__(self, call: Call, next: Handler) -> Reply:
        request = call.request
        pick = self._pick
        query_class = pick(request) if pick is not None else await self.classifier.classify(request)
        notes = call.trace.notes
        notes["query_class"] = query_class
        profile = self.profiles.get(query_class)
        if profile is not None:
            profiled = apply_profile(request, profile)
            if profiled is not request:
                call.request = profiled
                if profiled.model != request.model:
                    notes["routed_from"] = request.model
                request = profiled
        compact = self.compact
        if compact is not None:
            budget = compact.budgets.get(query_class)
            if not compact.settled(request, budget):
                await compact(call, budget)
        return await next(call)


def build_classifier(cfg: ClassifierConfig) -> Classifier:
    """The configured mode's classifier. The embeddings mode loads a model: imported only when asked for."""
    if cfg.mode == "embeddings":
        from middleware.classify.centroids import CentroidClassifier

        return CentroidClassifier(cfg.examples, cfg.default)
    return RuleScorer(cfg)
