from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.classify.compaction import compact
from proxy.types import Message, ToolCall

PROPERTIES = settings(max_examples=200, deadline=None)


def count(m: Message) -> int:
    return (len(m.content) if isinstance(m.content, str) else 0) // 4 + 4


def clean(text: str) -> str:
    """The normalised form of ``text`` as an old assistant message."""
    out = compact([Message("assistant", text), Message("user", "?")], None, count).messages
    if len(out) == 1:
        return ""  # normalised to nothing, so removed
    assert isinstance(out[0].content, str)
    return out[0].content


def call(call_id: str, name: str = "f") -> ToolCall:
    return ToolCall(call_id, name, '{"q":  "a   b"}')


# Examples


def test_prose_whitespace_is_normalised() -> None:
    text = "  Hello   world.\t\tBye  \n\n\n\n  - item   one  \nend   \n\n"
    assert clean(text) == "Hello world. Bye\n\n  - item one\nend"


def test_whitespace_inside_code_blocks_is_untouched() -> None:
    block = "```python  \ndef f(x):\n    return  x   \n\n\n\n```"
    text = f"Look:   here\n\n\n{block}\n\n\n~~~\n  a\t\tb  \n~~~  \nafter   it"
    assert clean(text) == f"Look: here\n\n{block}\n\n~~~\n  a\t\tb  \n~~~  \nafter it"


def test_an_unclosed_fence_runs_to_the_end_of_the_text() -> None:
    assert clean("see  this\n````\n  x   \n```\n\n\n\ny   ") == "see this\n````\n  x   \n```\n\n\n\ny   "


def test_inline_code_and_quoted_data_are_untouched() -> None:
    text = 'Run `ls   -l` with "two  spaces"   and “a   b”  \n>  quoted   line  \nplain   text'
    assert clean(text) == 'Run `ls   -l` with "two  spaces" and “a   b”\n>  quoted   line  \nplain text'


def test_spanish_accented_text_is_normalised_without_harm() -> None:
    text = "¿Qué   tal,  señor Muñoz?\t\n\n\n\nEl   año  pasado   fue «difícil»…  "
    assert clean(text) == "¿Qué tal, señor Muñoz?\n\nEl año pasado fue «difícil»…"


def test_the_last_user_message_is_never_changed() -> None:
    last = Message("user", "  ¿Y   ahora?\n\n\n\n  ")
    out = compact([Message("user", "a   b"), Message("assistant", "c   d"), last], 0, count).messages
    assert out == (last,)
    assert compact([Message("user", "   ")], None, count).messages == (Message("user", "   "),)


def test_tool_messages_and_content_parts_are_never_changed() -> None:
    parts: list[object] = [{"type": "text", "text": "a    b\n\n\n\nc"}]
    msgs = [
        Message("user", parts),
        Message("assistant", None, tool_calls=(call("1"),)),
        Message("tool", "  col1   col2  \n\n\n\n", tool_call_id="1"),
        Message("user", "ok"),
    ]
    assert compact(msgs, None, count).messages == tuple(msgs)


def test_empty_messages_are_removed() -> None:
    msgs = [
        Message("system", "  \n "),
        Message("user", None),
        Message("assistant", "", tool_calls=(call("1"),)),
        Message("tool", "", tool_call_id="1"),
        Message("assistant", "\t"),
        Message("user", "hi"),
    ]
    assert compact(msgs, None, count).messages == (msgs[2], msgs[3], msgs[5])


def test_repeated_system_messages_are_removed() -> None:
    msgs = [
        Message("system", "Be brief."),
        Message("user", "a"),
        Message("system", "Be   brief.  "),
        Message("developer", "Be brief."),
        Message("system", "Use Spanish."),
        Message("user", "b"),
    ]
    assert compact(msgs, None, count).messages == (msgs[0], msgs[1], msgs[3], msgs[4], msgs[5])


def test_a_tool_call_and_its_results_are_dropped_together() -> None:
    msgs = [
        Message("system", "s"),
        Message("user", "old question"),
        Message("assistant", None, tool_calls=(call("a"), call("b"))),
        Message("tool", "result a " * 20, tool_call_id="a"),
        Message("tool", "result b", tool_call_id="b"),
        Message("assistant", "old answer"),
        Message("user", "new question"),
    ]
    # Dropping the first user message is not enough; the call goes with both of its results.
    out = compact(msgs, count(msgs[0]) + count(msgs[5]) + count(msgs[6]), count).messages
    assert out == (msgs[0], msgs[5], msgs[6])


def test_reused_tool_call_ids_pair_each_call_with_the_results_right_after_it() -> None:
    msgs = [
        Message("user", "q1"),
        Message("assistant", None, tool_calls=(call("call_0"),)),
        Message("tool", "r1", tool_call_id="call_0"),
        Message("assistant", None, tool_calls=(call("call_0"),)),
        Message("tool", "r2", tool_call_id="call_0"),
        Message("user", "q2"),
    ]
    out = compact(msgs, sum(map(count, msgs[3:])), count).messages
    assert out == tuple(msgs[3:])


def test_the_last_user_message_and_what_follows_it_are_kept_whatever_the_budget() -> None:
    msgs = [
        Message("system", "s"),
        Message("user", "old"),
        Message("assistant", "old reply"),
        Message("user", "new"),
        Message("assistant", None, tool_calls=(call("1"),)),
        Message("tool", "r", tool_call_id="1"),
    ]
    out = compact(msgs, 0, count)
    assert out.messages == (msgs[0], *msgs[3:])
    assert out.tokens_after > 0  # over the budget: the caller decides what to do


def test_a_call_answered_after_the_last_user_message_is_kept() -> None:
    msgs = [
        Message("assistant", None, tool_calls=(call("1"),)),
        Message("user", "meanwhile"),
        Message("tool", "r", tool_call_id="1"),
    ]
    assert compact(msgs, 0, count).messages == tuple(msgs)


def test_nothing_is_trimmed_without_a_user_message() -> None:
    msgs = [Message("system", "s"), Message("assistant", "a" * 400), Message("assistant", "Sure,")]
    assert compact(msgs, 0, count).messages == tuple(msgs)


def test_trimming_stops_at_the_budget() -> None:
    msgs = [Message("user", f"question {i}" * 4) for i in range(5)] + [Message("user", "last")]
    budget = sum(map(count, msgs[2:]))
    out = compact(msgs, budget, count)
    assert out.messages == tuple(msgs[2:])
    assert out.tokens_before == sum(map(count, msgs))
    assert out.tokens_after == budget
    assert out.saved == count(msgs[0]) + count(msgs[1])


def test_no_budget_means_no_trimming() -> None:
    msgs = [Message("user", "x" * 400), Message("assistant", "y" * 400), Message("user", "z")]
    out = compact(msgs, None, count)
    assert out.messages == tuple(msgs)
    assert out.saved == 0


def test_a_budget_already_met_means_no_trimming() -> None:
    msgs = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    assert compact(msgs, sum(map(count, msgs)), count).messages == tuple(msgs)


def test_each_message_is_counted_once() -> None:
    calls: list[Message] = []

    def counting(m: Message) -> int:
        calls.append(m)
        return count(m)

    msgs = [Message("system", "s  s"), Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    compact(msgs, 1, counting)
    # Each input once, plus the one message that normalisation changed.
    assert len(calls) == len(msgs) + 1


# Properties over generated conversations

# Texts are built from pools of precomposed lines: one draw per line keeps a run to a few seconds.
SPANS = ["`a   b`", '"q   r"']
WORDS = [*SPANS, "hola", "señor  Muñoz", "naïve", "¿sí?", "x=1", "año"]
PROSE = [
    f"{lead}{a}{gap}{b}{tail}"
    for lead in ["", "  ", "> ", "- ", ">  "]
    for a in WORDS
    for gap in [" ", "  ", "\t", " \t  "]
    for b in WORDS
    for tail in ["", "  \t"]
]
BODIES = [
    "",
    "x  =\t1   ",
    "   \n\n\n\n  y  ",
    "\t\tdef f():  \n    return  x  ",
    "a\t\t\tb\n```inner\n  > q  ",
]
CODE = [
    f"{fence}{info}\n{body}\n{fence}"
    for fence in ["```", "~~~", "````"]
    for info in ["", "py", " js  "]
    for body in BODIES
]
# One sampled_from, weighted so that about a third of the lines are code blocks and a tenth are blank.
LINES = st.sampled_from(PROSE + CODE * 40 + ["", "  ", "\t"] * 200)
EDGES = st.sampled_from(["", " ", "\n\n\n", "  \t\n"])


@dataclass
class Text:
    text: str
    blocks: list[str]


@st.composite
def texts(draw: st.DrawFn, tag: str = "") -> Text:
    parts = draw(st.lists(LINES, max_size=4))
    blocks = [p for p in parts if p in CODE]
    return Text(draw(EDGES) + tag + "\n".join(parts) + draw(EDGES), blocks)


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)
    blocks: list[list[str]] = field(default_factory=list)  # the code blocks of each message

    def add(self, m: Message, blocks: Sequence[str] = ()) -> None:
        self.messages.append(m)
        self.blocks.append(list(blocks))


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    conv = Conversation()
    systems: list[Text] = []
    ids = iter(range(1000))

    def add_system() -> None:
        # Distinct system messages differ in their tag; a repeat is an exact copy.
        if draw(st.booleans()) and systems:
            t = draw(st.sampled_from(systems))
        else:
            t = draw(texts(tag=f"rule{len(systems)}\n"))
            systems.append(t)
        conv.add(Message(draw(st.sampled_from(["system", "system", "developer"])), t.text), t.blocks)

    def add_calls() -> None:
        calls = tuple(call(f"c{next(ids)}") for _ in range(draw(st.integers(1, 2))))
        t = draw(st.one_of(st.none(), texts()))
        conv.add(Message("assistant", t.text if t else None, tool_calls=calls), t.blocks if t else ())
        for c in calls:
            conv.add(Message("tool", draw(LINES), tool_call_id=c.id))  # data: odd whitespace is kept

    for _ in range(draw(st.integers(0, 2))):
        add_system()
    for kind in draw(st.lists(st.sampled_from(["user", "assistant", "calls", "system"]), max_size=8)):
        if kind == "calls":
            add_calls()
        elif kind == "system":
            add_system()
        else:
            t = draw(texts())
            conv.add(Message(kind, t.text), t.blocks)
    last = draw(texts())
    conv.add(Message("user", last.text), last.blocks)
    if draw(st.booleans()):
        add_calls()  # an agent loop in progress after the last user message
    return conv


Case = tuple[Conversation, int | None]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    conv = draw(conversations())
    total = sum(map(count, conv.messages))
    return conv, draw(st.one_of(st.none(), st.integers(0, total + 10)))


def squeeze(content: object) -> object:
    return re.sub(r"\s", "", content) if isinstance(content, str) else content


def last_user(msgs: Sequence[Message]) -> int:
    return max(i for i, m in enumerate(msgs) if m.role == "user")


def embedding(conv: Conversation, out: Sequence[Message]) -> list[int] | None:
    """The input index each output message comes from, or None when ``out`` is no subsequence of the input.

    An output message matches an input message that differs in whitespace only, outside code blocks and
    inline spans, and not at all when it is the last user message or a tool message. Taking the earliest match is
    enough to find an embedding when one exists.
    """
    ins, last = conv.messages, last_user(conv.messages)

    def matches(i: int, o: Message) -> bool:
        m = ins[i]
        if i == last or m.role == "tool" or not isinstance(m.content, str):
            return o == m
        same_fields = fields(o) == fields(m)
        if not (same_fields and isinstance(o.content, str) and squeeze(o.content) == squeeze(m.content)):
            return False
        kept_spans = all(o.content.count(span) == m.content.count(span) for span in SPANS)
        return kept_spans and all(b in o.content for b in conv.blocks[i])

    found: list[int] = []
    i = 0
    for o in out:
        while i < len(ins) and not matches(i, o):
            i += 1
        if i == len(ins):
            return None
        found.append(i)
        i += 1
    return found


def fields(m: Message) -> tuple[object, ...]:
    return (m.role, m.name, m.tool_calls, m.tool_call_id, m.reasoning_content, m.extra)


def is_subsequence(sub: Sequence[Message], seq: Sequence[Message]) -> bool:
    rest = iter(seq)
    return all(any(m == s for s in rest) for m in sub)


@PROPERTIES
@given(cases())
def test_output_is_the_normalised_input_with_messages_left_out(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count).messages
    assert embedding(conv, out) is not None
    assert is_subsequence(out, compact(conv.messages, None, count).messages)


@PROPERTIES
@given(cases())
def test_every_code_block_of_a_kept_message_is_byte_identical(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count).messages
    found = embedding(conv, out)
    assert found is not None
    for o, i in zip(out, found, strict=True):
        for block in conv.blocks[i]:
            assert isinstance(o.content, str) and block in o.content


@PROPERTIES
@given(cases())
def test_every_distinct_system_message_is_kept_in_order(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count).messages
    pinned = {"system", "developer"}
    distinct = list(dict.fromkeys((m.role, squeeze(m.content)) for m in conv.messages if m.role in pinned))
    assert [(m.role, squeeze(m.content)) for m in out if m.role in pinned] == distinct


@PROPERTIES
@given(cases())
def test_the_last_user_message_is_byte_identical(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count).messages
    assert out[last_user(out)] == conv.messages[last_user(conv.messages)]


@PROPERTIES
@given(cases())
def test_tool_calls_and_their_results_stay_together(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count).messages
    called = {c.id for m in out for c in m.tool_calls}
    answered = {m.tool_call_id for m in out if m.role == "tool"}
    assert called == answered


@PROPERTIES
@given(cases())
def test_old_turns_are_dropped_oldest_first(case: Case) -> None:
    conv, budget = case
    # Compacting what is already clean keeps the very objects, so identity tells which copy was kept.
    cleaned = compact(conv.messages, None, count).messages
    out = compact(cleaned, budget, count).messages
    droppable = [m for m in cleaned[: last_user(cleaned)] if m.role not in {"system", "developer"}]
    kept = [any(m is o for o in out) for m in droppable]
    assert kept == sorted(kept)  # some dropped, then all kept


@PROPERTIES
@given(cases())
def test_output_fits_the_budget_when_the_kept_messages_do(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count)
    cleaned = compact(conv.messages, None, count).messages
    start = last_user(cleaned)
    must_keep = [m for i, m in enumerate(cleaned) if i >= start or m.role in {"system", "developer"}]
    if budget is not None and sum(map(count, must_keep)) <= budget:
        assert out.tokens_after <= budget
    if budget is None or sum(map(count, cleaned)) <= budget:
        assert out.messages == cleaned


@PROPERTIES
@given(cases())
def test_compacting_twice_changes_nothing(case: Case) -> None:
    conv, budget = case
    once = compact(conv.messages, budget, count).messages
    assert compact(once, budget, count).messages == once


@PROPERTIES
@given(cases())
def test_token_counts_are_the_sums_over_input_and_output(case: Case) -> None:
    conv, budget = case
    out = compact(conv.messages, budget, count)
    assert out.tokens_before == sum(map(count, conv.messages))
    assert out.tokens_after == sum(map(count, out.messages))
    assert out.saved == out.tokens_before - out.tokens_after >= 0


TRICKY = st.text(alphabet=' \t\n\r\u00a0`~">“”ab', max_size=60)


@PROPERTIES
@given(TRICKY)
def test_normalising_arbitrary_text_only_removes_whitespace_and_is_idempotent(text: str) -> None:
    once = clean(text)
    assert squeeze(once) == squeeze(text)
    assert len(once) <= len(text)
    assert clean(once) == once
