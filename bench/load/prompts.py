"""What the load generator sends: a built-in mix of Fluido's query classes, or chat bodies from a file.

The built-in classes mirror the classifier's (short, long, code, reasoning) with output caps typical of
each, so a mix of them loads a server the way a team's chat traffic does. ``--mix short=70,long=30``
chooses the shares; ``--prompts FILE.jsonl`` sends OpenAI chat bodies (one per line, used in turn).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SHORT = (
    "What is the capital of Portugal?",
    "How many minutes are in a day?",
    "Give me a synonym for 'quick'.",
    "At what temperature does water boil at sea level?",
    "Who wrote 'Pride and Prejudice'?",
    "Translate 'good morning' into Spanish.",
)
_CODE = (
    "Write a Python function that returns the n-th Fibonacci number iteratively, with type hints and a "
    "docstring, and explain its complexity.",
    "My SQL query is slow: SELECT * FROM orders o JOIN customers c ON o.customer_id = c.id WHERE "
    "c.country = 'PT' ORDER BY o.created_at DESC. Which indexes would help, and why?",
    "Why does this JavaScript print 3 three times? for (var i = 0; i < 3; i++) { setTimeout(() => "
    "console.log(i), 0); } Show two ways to fix it.",
)
_REASONING = (
    "A shop takes 30% off a jacket and then another 20% off at the till. Is that 50% off in total? "
    "Work it out step by step.",
    "If I put 10,000 at 4% compound interest per year, how much will I have after 5 years? Explain the "
    "formula and each step.",
    "Three friends split a bill of 96 so that the second pays twice the first and the third pays the "
    "difference of the other two. How much does each pay? Reason carefully.",
)
_LONG_SENTENCES = (
    "The committee met on Tuesday to review the quarterly figures for the northern region.",
    "Revenue grew modestly, but operating costs rose faster because of new warehouse leases.",
    "Several members asked whether the delivery delays reported in March had been resolved.",
    "The logistics lead explained that two carriers had been replaced and routes were re-planned.",
    "Customer complaints fell by a third after the change, according to the support team's log.",
    "A proposal to open a second distribution centre was discussed at length without a decision.",
    "Finance asked for a sensitivity analysis covering fuel prices and the exchange rate.",
    "The meeting closed with an agreement to revisit the proposal once the analysis is ready.",
)


@dataclass(frozen=True, slots=True)
class QueryClass:
    """A built-in kind of request: its prompts and the output cap it is sent with."""

    name: str
    prompts: tuple[str, ...]
    max_tokens: int


def _long_documents() -> tuple[str, ...]:
    """Meeting notes of roughly 600 words to summarise: a long prompt that costs real prefill."""
    docs = []
    for shift in range(3):
        sentences = [_LONG_SENTENCES[(i + shift) % len(_LONG_SENTENCES)] for i in range(48)]
        docs.append("Summarise these meeting notes in five bullet points:\n\n" + " ".join(sentences))
    return tuple(docs)


def builtin_classes() -> dict[str, QueryClass]:
    return {
        "short": QueryClass("short", _SHORT, 32),
        "long": QueryClass("long", _long_documents(), 200),
        "code": QueryClass("code", _CODE, 256),
        "reasoning": QueryClass("reasoning", _REASONING, 384),
    }


DEFAULT_MIX = "short=40,long=20,code=20,reasoning=20"


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request body (without model and stream settings) and the class it is counted under."""

    query_class: str
    body: dict[str, Any]


def parse_mix(text: str) -> dict[str, float]:
    """ "short=70,long=30" -> shares; names must be built-in classes, weights positive."""
    classes = builtin_classes()
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in classes:
            raise ValueError(f"mix entries are CLASS=WEIGHT with CLASS in {sorted(classes)}; got {part!r}")
        mix[name] = float(weight)
        if mix[name] < 0:
            raise ValueError(f"negative weight for {name}")
    if sum(mix.values()) <= 0:
        raise ValueError("the mix needs a positive weight")
    return mix


def builtin_prompts(mix: dict[str, float], count: int, seed: int) -> list[Prompt]:
    """``count`` requests drawn from the mix (seeded: every endpoint gets the same sequence)."""
    classes = builtin_classes()
    rng = random.Random(seed)
    names = [n for n, w in mix.items() if w > 0]
    picks = rng.choices(names, weights=[mix[n] for n in names], k=count)
    prompts = []
    for name in picks:
        qc = classes[name]
        text = rng.choice(qc.prompts)
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": qc.max_tokens}
        prompts.append(Prompt(name, body))
    return prompts


def file_prompts(path: Path) -> list[Prompt]:
    """Chat bodies from a JSONL file; ``model``, ``stream`` and ``stream_options`` are set by the tool.
    A line may name its class in a "class" (or "query_class") field, which is not sent."""
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ValueError(f"{path}:{number}: expected a chat body with a messages list")
        name = str(body.pop("class", body.pop("query_class", "file")))
        for key in ("model", "stream", "stream_options"):
            body.pop(key, None)
        prompts.append(Prompt(name, body))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts
