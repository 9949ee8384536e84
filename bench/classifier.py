"""The query classifier and prompt compaction: accuracy, cost, tokens saved (``python -m bench.classifier``).

1. Accuracy and confusion matrix of each mode (the fast scorer, the embeddings centroid) on the tuning set
   (tests/data/query_classes.tuning.jsonl, which the scorer's weights were tuned on) and on the held-out set
   (tests/data/query_classes.heldout.jsonl, which they never saw: the figure to believe), with the cost per
   classification.
2. Cost per request of classify + compact at prompts of about 100, 2,000 and 16,000 tokens.
3. Tokens saved by compaction on long conversations built from the labelled prompts (a fixed seed).
Prints figures; never fails on a time.
"""

from __future__ import annotations

import collections
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from middleware.classify import ClassifierConfig, RuleScorer
from middleware.classify.compaction import compact
from proxy.tokens import estimate_message_tokens
from proxy.types import Message

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TUNING = DATA / "query_classes.tuning.jsonl"
HELD_OUT = DATA / "query_classes.heldout.jsonl"
CLASSES = ("short", "long", "code", "reasoning")


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def accuracy(name: str, pick: Callable[[list[str]], list[str]], rows: list[dict[str, str]]) -> None:
    """``pick`` classifies a list of prompts: one by one for the fast scorer, batched for the embeddings."""
    started = time.perf_counter()
    picked = pick([row["prompt"] for row in rows])
    per_prompt_us = (time.perf_counter() - started) / len(rows) * 1e6
    confusion = collections.Counter((row["class"], got) for row, got in zip(rows, picked, strict=True))
    right = sum(n for (truth, got), n in confusion.items() if truth == got)
    print(
        f"{name}: accuracy {right / len(rows):.1%} ({right}/{len(rows)}), {per_prompt_us:.0f} us per prompt"
    )
    print("  truth \\ got " + "".join(f"{c:>10}" for c in CLASSES))
    for truth in CLASSES:
        print(f"  {truth:<11} " + "".join(f"{confusion[(truth, got)]:>10}" for got in CLASSES))
    by_lang: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter(r["lang"] for r in rows)
    for row, got in zip(rows, picked, strict=True):
        by_lang[row["lang"]] += got == row["class"]
    print(
        "  by language: " + ", ".join(f"{lang} {by_lang[lang] / n:.0%}" for lang, n in totals.most_common())
    )


def conversation(rows: list[dict[str, str]], rng: random.Random, tokens: int) -> list[Message]:
    """A chat history of about ``tokens`` estimated tokens, ending with a real user prompt."""
    system = Message("system", "You are a helpful tutor.  Answer   clearly.\n\n\n")
    messages = [system, system]  # a repeated system prompt, as careless clients send
    while sum(map(estimate_message_tokens, messages)) < tokens:
        messages.append(Message("user", rng.choice(rows)["prompt"]))
        answer = "Sure.   Here is what I think:\n\n\n" + rng.choice(rows)["prompt"] + "  \n"
        messages.append(Message("assistant", answer))
    messages.append(Message("user", rng.choice(rows)["prompt"]))
    return messages


def load(path: Path) -> list[dict[str, str]]:
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    rows, held_out = load(TUNING), load(HELD_OUT)
    scorer = RuleScorer(ClassifierConfig())
    for label, labelled in (("Tuning set", rows), ("Held-out set", held_out)):
        print(f"{label}: {len(labelled)} prompts, {len({r['lang'] for r in labelled})} languages")
    print()

    def one_by_one(texts: list[str]) -> list[str]:
        return [scorer.pick(text) for text in texts]

    accuracy("fast scorer (rules), tuning set", one_by_one, rows)
    accuracy("fast scorer (rules), held-out set", one_by_one, held_out)
    try:
        from middleware.classify.centroids import CentroidClassifier

        started = time.perf_counter()
        centroids = CentroidClassifier({}, "short")
        print(f"\n(embeddings model loaded in {time.perf_counter() - started:.1f} s)")
        # Its example prompts are built in, so both sets are unseen by it.
        label = "embeddings (nearest centroid, all-MiniLM-L6-v2, embedded in one batch)"
        accuracy(f"{label}, tuning set", centroids.pick_many, rows)
        accuracy(f"{label}, held-out set", centroids.pick_many, held_out)
        centroids.close()
    except ImportError as exc:
        print(f"\nembeddings mode skipped: {exc}")

    print("\nCost per request: classify (fast scorer) + compact, by prompt size (estimated tokens);")
    print("compact's p50 is a conversation whose old turns it has seen before, its p99 about the first sight")
    print(f"  {'tokens':>7} {'messages':>9} {'classify p50/p99 us':>21} {'compact p50/p99 us':>20}")
    rng = random.Random(7)
    for size in (100, 2000, 16000):
        messages = conversation(rows, rng, size) if size > 200 else [Message("user", "word " * 80)]
        last = next(m for m in reversed(messages) if m.role == "user")
        text = last.content if isinstance(last.content, str) else ""
        c50, c99 = timed(lambda text=text: scorer.pick(text), 300)  # type: ignore[misc]
        k50, k99 = timed(lambda messages=messages: compact(messages, 1024, estimate_message_tokens), 100)  # type: ignore[misc]
        total = sum(map(estimate_message_tokens, messages))
        print(f"  {total:>7} {len(messages):>9} {c50:>10.1f} / {c99:<8.1f} {k50:>9.1f} / {k99:<8.1f}")

    print("\nTokens saved by compaction on 40 long conversations (2,000-16,000 tokens each)")
    for budget in (None, 4096, 2048):
        before = after = 0
        for i in range(40):
            messages = conversation(rows, random.Random(i), 2000 + 350 * i)
            result = compact(messages, budget, estimate_message_tokens)
            before, after = before + result.tokens_before, after + result.tokens_after
        label = "clean-ups only" if budget is None else f"budget {budget}"
        print(f"  {label:<15} {before:>8} -> {after:>8} tokens, saved {1 - after / before:.1%}")


if __name__ == "__main__":
    main()
