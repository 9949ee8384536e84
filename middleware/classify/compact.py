"""Prompt compaction, run by the Classify link once the class is known: every prompt is cleaned up
(whitespace outside code and quotes, empty and repeated system messages), and old turns are trimmed to the
query class's token budget. The rules and their invariants are in ``compaction.py``; tokens saved become a
note and a counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from middleware.classify.compaction import compact, untouched
from middleware.classify.config import Profile
from middleware.classify.tokens import TokenCounter
from proxy.tokens import estimate_message_tokens
from proxy.types import Call, ChatRequest


class Compact:
    """The class's profile names the budget; ``settled`` says, cheaply, when there is nothing to do."""

    def __init__(self, profiles: Mapping[str, Profile], counter: TokenCounter | None = None) -> None:
        self.profiles = profiles
        self.counter = counter
        # None: clean up only, never trim turns (no profile, or a budget of 0).
        self.budgets = {name: p.budget for name, p in profiles.items() if p.budget > 0}

    def settled(self, request: ChatRequest, budget: int | None) -> bool:
        """True when compacting ``request`` to ``budget`` would leave it as it is. Told by the estimate,
        so only where the estimate is what compaction counts with."""
        counter = self.counter
        estimated = budget is None or counter is None or not counter.knows(request.model)
        return estimated and untouched(request.messages, budget)

    async def __call__(self, call: Call, budget: int | None) -> None:
        messages = call.request.messages
        if budget is None or self.counter is None:
            result = compact(messages, budget, estimate_message_tokens)
        else:
            # Clean up first, then count the cleaned turns with the upstream's tokenizer, then trim: the
            # clean-ups are idempotent, so the second pass only trims.
            cleaned = compact(messages, None, estimate_message_tokens)
            count = await self.counter.counter(call.request.model, cleaned.messages)
            result = compact(cleaned.messages, budget, count)
        if result.messages != messages:
            call.request = dataclasses.replace(call.request, messages=result.messages)
            if result.saved > 0:
                call.notes["tokens_saved"] = str(result.saved)
