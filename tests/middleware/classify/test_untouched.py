"""The cheap test the Classify link runs first: when it says compaction leaves a prompt alone, compaction
does leave it alone, and it says so for the usual prompt."""

from __future__ import annotations

import random

from hypothesis import given

from middleware.classify.compaction import compact, untouched
from proxy.tokens import estimate_message_tokens
from proxy.types import Message, ToolCall
from tests.middleware.classify.test_classify import TUNING, labelled
from tests.middleware.classify.test_compaction import PROPERTIES, Case, cases

SYSTEM = Message("system", "You are a helpful assistant.")


def leaves_alone(messages: list[Message], budget: int | None) -> bool:
    out = compact(messages, budget, estimate_message_tokens).messages
    return len(out) == len(messages) and all(map(lambda a, b: a is b, out, messages))


@PROPERTIES
@given(cases())
def test_untouched_prompts_are_left_alone_by_compaction(case: Case) -> None:
    conv, budget = case
    if untouched(conv.messages, budget):
        assert leaves_alone(conv.messages, budget)


def test_untouched_tells_the_usual_prompts_and_only_those() -> None:
    """Conversations of clean labelled prompts, with now and then a flaw that compaction would fix."""
    prompts = [row["prompt"] for row in labelled(TUNING)]
    rng = random.Random(5)
    told = {True: 0, False: 0}
    for _ in range(600):
        messages = [SYSTEM]
        for i in range(rng.randint(0, 6)):
            messages.append(Message("user" if i % 2 == 0 else "assistant", rng.choice(prompts)))
        messages.append(Message("user", rng.choice(prompts)))
        flaw = rng.randrange(6)
        if flaw == 0:
            messages.insert(1, SYSTEM)  # a repeated system message
        elif flaw == 1:
            messages.insert(0, Message("assistant", "  "))  # an empty turn
        elif flaw == 2:
            calls = (ToolCall("c1", "f", "{}"),)
            answer = Message("tool", "x  y", tool_call_id="c1")  # data: its spaces are kept
            messages[-1:-1] = [Message("assistant", None, tool_calls=calls), answer]
        budget = rng.choice([None, 50, 300, 2048])
        says = untouched(messages, budget)
        if says:
            assert leaves_alone(messages, budget)
        if flaw in (0, 1):
            assert not says and not leaves_alone(messages, budget)
        told[says] += 1
    assert told[True] > 100 and told[False] > 100, told


def test_the_bench_prompt_is_untouched_within_its_budget() -> None:
    messages = [SYSTEM, Message("user", "Say hello in one short sentence, please.")]
    assert untouched(messages, 2048) and untouched(messages, None)
    # Past the budget it says no, though nothing here could be dropped: no only means "compact to see".
    assert not untouched(messages, 10) and leaves_alone(messages, 10)
