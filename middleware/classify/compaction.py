"""Semantics-preserving prompt compaction: make a long chat history cheaper for a small model.

Steps, in order: (1) normalise whitespace in string ``content`` outside protected text (fenced code
blocks, an unclosed fence running to the end; inline code; double-quoted text on one line; lines
starting with ``>``); (2) remove empty messages and exact repeats of system messages; (3) with a budget,
drop old turns, oldest first, until the history fits or nothing droppable is left.

Invariants:

- Never changed: the last user message, tool messages (they are data), protected text, content parts,
  tool call arguments and reasoning.
- Never dropped: system/developer messages, the last user message and everything after it. The output is
  the normalised input with some messages left out, in the input's order.
- An assistant message with tool calls is dropped together with the tool messages answering it, so no
  call is left without its results and no result without its call.
- Compaction is idempotent: compacting its own output changes nothing.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from operator import itemgetter

from proxy.tokens import estimate_message_tokens
from proxy.types import Message

# A fence may be indented any amount: fences inside list items are, and protecting too much is harmless.
_FENCE = re.compile(r"\s*(`{3,}|~{3,})")
# Inline code (CommonMark: a backtick run closed by a run of the same length) and quoted data on one line.
_SPAN = re.compile(r'(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)|"[^"]*"|“[^”]*”')
_RUN = re.compile(r"[ \t]{2,}")
_BLANK_LINES = re.compile(r"\n{3,}")

_PINNED_ROLES = frozenset({"system", "developer"})
_REMOVABLE_WHEN_EMPTY = frozenset({"system", "developer", "user", "assistant"})

_Piece = tuple[str, bool]  # (text, protected)


@dataclass(frozen=True, slots=True)
class Compacted:
    """The compacted messages and their token counts before and after."""

    messages: tuple[Message, ...]
    tokens_before: int
    tokens_after: int

    @property
    def saved(self) -> int:
        # Negative when a real tokenizer counts the normalised text as longer, which is possible but rare.
        return self.tokens_before - self.tokens_after


def compact(messages: Sequence[Message], budget: int | None, count: Callable[[Message], int]) -> Compacted:
    """Normalise, clean up and (with a ``budget``) trim ``messages``; ``count`` gives one message's tokens."""
    counts: dict[int, int] = {}

    # A real tokenizer is not cheap: count each message object once. Keys stay valid because every
    # counted object lives until we return, so no two of them share an id().
    def cost(m: Message) -> int:
        if id(m) not in counts:
            counts[id(m)] = count(m)
        return counts[id(m)]

    before = sum(cost(m) for m in messages)
    kept = _clean(_normalised(messages))
    # The usual prompt needs nothing: the same messages, within the budget. Skip counting them again.
    unchanged = len(kept) == len(messages) and all(map(operator.is_, kept, messages))
    if unchanged and (budget is None or before <= budget):
        return Compacted(tuple(messages), before, before)
    if budget is not None:
        kept = _trim(kept, [cost(m) for m in kept], budget)
    return Compacted(tuple(kept), before, sum(cost(m) for m in kept))


def untouched(messages: Sequence[Message], budget: int | None) -> bool:
    """True when ``compact(messages, budget, estimate_message_tokens)`` would return ``messages`` as they
    are: the usual prompt, told in one pass that builds nothing. False may still mean nothing changes."""
    last = _last_user(messages)
    pinned: list[Message] = []
    total = 0
    for i, m in enumerate(messages):
        content = m.content
        if i != last:
            if _is_empty(m):
                return False
            if m.role in _PINNED_ROLES:
                if m in pinned:
                    return False
                pinned.append(m)
            if m.role != "tool" and isinstance(content, str) and not _plain(content):
                return False
        if budget is not None:
            total += estimate_message_tokens(m)
    return budget is None or total <= budget


def _plain(text: str) -> bool:
    """True when ``text`` certainly has no whitespace to normalise (substring tests, which run in C)."""
    return (
        "  " not in text
        and "\t" not in text
        and " \n" not in text
        and "\n\n\n" not in text
        and text == text.strip()
    )


def _normalise(text: str) -> str:
    """Normalise the whitespace of ``text`` outside its protected parts."""
    # Most text has nothing to normalise: skip the line-by-line walk then.
    return text if _plain(text) else _normalise_walk(text)


@functools.lru_cache(maxsize=1024)
def _normalise_walk(text: str) -> str:
    """The walk itself, remembered: a conversation resends its old turns with every new one."""
    groups = [("".join(t for t, _ in grp), prot) for prot, grp in groupby(_pieces(text), key=itemgetter(1))]
    parts = [t if prot else _BLANK_LINES.sub("\n\n", t) for t, prot in groups]
    # Strip the whole content, but never into a protected part (an unclosed fence at the end, say).
    if groups and not groups[0][1]:
        parts[0] = parts[0].lstrip()
    if groups and not groups[-1][1]:
        parts[-1] = parts[-1].rstrip()
    return "".join(parts)


def _pieces(text: str) -> Iterator[_Piece]:
    """Split ``text`` into pieces that join back to it, each normalised unless protected."""
    fence = ""  # the open fence's marker; "" outside a fence
    lines = text.split("\n")
    for i, line in enumerate(lines):
        end = "" if i == len(lines) - 1 else "\n"
        if fence:
            if _closes(line, fence):
                fence = ""
                yield line, True
                yield end, False  # free, so blank lines after a block collapse like any others
            else:
                yield line + end, True
        elif opening := _FENCE.match(line):
            fence = opening.group(1)
            yield line + end, True
        elif line.lstrip().startswith(">"):
            yield line, True
            yield end, False
        else:
            yield from _line_pieces(line)
            yield end, False


def _closes(line: str, fence: str) -> bool:
    marker = line.strip()
    return len(marker) >= len(fence) and marker == fence[0] * len(marker)


def _line_pieces(line: str) -> Iterator[_Piece]:
    # Protected spans end in a quote or backtick, so trailing whitespace is never inside one.
    line = line.rstrip(" \t")
    body = line.lstrip()
    # Leading indentation is kept: it carries structure (nested lists, code outside fences).
    yield line[: len(line) - len(body)], False
    start = 0
    for span in _SPAN.finditer(body):
        yield _RUN.sub(" ", body[start : span.start()]), False
        yield span.group(), True
        start = span.end()
    yield _RUN.sub(" ", body[start:]), False


def _last_user(messages: Sequence[Message]) -> int:
    """The index of the last user message, or -1 when there is none."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), -1)


def _normalised(messages: Sequence[Message]) -> list[Message]:
    last = _last_user(messages)
    out: list[Message] = []
    for i, m in enumerate(messages):
        # The last user message is the question being asked and tool results are data: both go verbatim.
        if i == last or m.role == "tool" or not isinstance(m.content, str):
            out.append(m)
            continue
        text = _normalise(m.content)
        # Keep the same object when nothing changed, so its token count is reused.
        out.append(m if text == m.content else replace(m, content=text))
    return out


def _clean(messages: list[Message]) -> list[Message]:
    last = _last_user(messages)
    seen: list[Message] = []  # a list, not a set: content parts and ``extra`` are not hashable
    out: list[Message] = []
    for i, m in enumerate(messages):
        if i != last and _is_empty(m):
            continue
        if m.role in _PINNED_ROLES:
            if m in seen:
                continue
            seen.append(m)
        out.append(m)
    return out


def _is_empty(m: Message) -> bool:
    blank = m.content is None or (isinstance(m.content, str) and not m.content.strip())
    return m.role in _REMOVABLE_WHEN_EMPTY and blank and not m.tool_calls


def _trim(messages: list[Message], costs: list[int], budget: int) -> list[Message]:
    total = sum(costs)
    if total <= budget:
        return messages  # the usual case: nothing to drop, and no need to find what could be
    dropped: set[int] = set()
    for unit in _units(messages):
        if total <= budget:
            break
        dropped.update(unit)
        total -= sum(costs[i] for i in unit)
    return [m for i, m in enumerate(messages) if i not in dropped]


def _units(messages: Sequence[Message]) -> Iterator[list[int]]:
    """The droppable units of ``messages`` (lists of indices), oldest first."""
    # Without a user message there is no telling old turns from the current one: nothing is droppable.
    end = max(_last_user(messages), 0)
    answered_later = _orphans(messages[end:])
    claimed: set[int] = set()
    for i in range(end):
        m = messages[i]
        if i in claimed or m.role in _PINNED_ROLES:
            continue
        unit = [i]
        if m.tool_calls:
            ids = {c.id for c in m.tool_calls}
            if ids & answered_later:
                continue  # some of its results are kept, so the call must be kept too
            # Only the tool messages right after the call: local servers often reuse ids like "call_0".
            j = i + 1
            while j < end and messages[j].role == "tool":
                if messages[j].tool_call_id in ids:
                    unit.append(j)
                j += 1
            claimed.update(unit)
        yield unit


def _orphans(tail: Sequence[Message]) -> set[str | None]:
    """Ids of the tool messages in ``tail`` whose call comes before it."""
    called: set[str] = set()
    orphans: set[str | None] = set()
    for m in tail:
        called.update(c.id for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id not in called:
            orphans.add(m.tool_call_id)
    return orphans
