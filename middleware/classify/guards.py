"""Characters a regular expression cannot match without: a search is skipped when the text has none of them.

Most prompts hold no code and no arithmetic, so most of the scorer's structure patterns find nothing, and
each search still walks the whole text. ``required_chars`` reads a pattern's parsed form and returns a set
of characters every match contains at least one of: a literal, a character class of literals, the union of
the alternatives' sets, a repeat's set when it repeats at least once, the smallest such set in a sequence.
Anything it cannot reason about (categories such as ``\\d``, negations, case folding, back-references) gives
no set for that part; a pattern with none at all is always searched. A text with none of the characters
cannot match, so skipping its search changes no score.
"""

from __future__ import annotations

import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

MOST_CHARS = 16  # more than this: checking the characters costs about what the search does
_RANGE_CHARS = 64  # a class's range is spelled out up to this many characters
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT))


def required_chars(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Characters of which every match of ``pattern`` holds one, or None when none are known (or too many
    to be worth checking)."""
    if pattern.flags & re.IGNORECASE or not isinstance(pattern.pattern, str):
        return None
    try:
        found = _sequence(sre_parse.parse(pattern.pattern, pattern.flags))
    except Exception:  # the parser's internals changed: search always, as without a guard
        return None
    return found if found is not None and len(found) <= MOST_CHARS else None


def may_match(needs: frozenset[str] | None, text: str) -> bool:
    """False only when ``text`` holds none of ``needs`` (so a search would find nothing)."""
    return needs is None or any(map(text.__contains__, needs))


def _sequence(items: Any) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    for op, arg in items:
        found = _item(op, arg)
        if found is not None and (best is None or len(found) < len(best)):
            best = found
    return best


def _item(op: Any, arg: Any) -> frozenset[str] | None:
    if op is sre.LITERAL:
        return frozenset(chr(arg))
    if op is sre.IN:
        chars: set[str] = set()
        for kind, value in arg:
            if kind is sre.LITERAL:
                chars.add(chr(value))
            elif kind is sre.RANGE and value[1] - value[0] < _RANGE_CHARS:
                chars.update(map(chr, range(value[0], value[1] + 1)))
            else:  # a negation, a category, a wide range
                return None
        return frozenset(chars)
    if op is sre.SUBPATTERN:
        _, added, _, inner = arg
        return None if added & re.IGNORECASE else _sequence(inner)
    if op is sre.BRANCH:
        union: set[str] = set()
        for alternative in arg[1]:
            found = _sequence(alternative)
            if found is None:
                return None
            union |= found
        return frozenset(union)
    if op in _REPEATS:
        least, _, inner = arg
        return _sequence(inner) if least >= 1 else None
    if op is getattr(sre, "ATOMIC_GROUP", None):
        return _sequence(arg)
    return None  # anchors, look-arounds, categories, back-references, any character: no requirement
