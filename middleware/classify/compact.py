"""Prompt compaction as a chain link: every prompt is cleaned up (whitespace outside code and quotes, empty
and repeated system messages), and old turns are trimmed to the query class's token budget. The rules
and their invariants are in ``compaction.py``; tokens saved become a note and a counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from middleware.classify.compaction import compact
from middleware.classify.config import Profile
from middleware.classify.tokens import TokenCounter
from proxy.tokens import estimate_message_tokens
from proxy.types import Call, Handler, Reply


class Compact:
    """Runs after the classifier, whose note names the class and so the budget."""

    def __init__(self, profiles: Mapping[str, Profile], counter: TokenCounter | None = None) -> None:
        self.profiles = profiles
        self.counter = counter

    async def __call__(self, call: Call, next: Handler) -> Reply:
        profile = self.profiles.get(call.notes.get("query_class", ""))
        budget = profile.budget if profile is not None and profile.budget > 0 else None
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
        return await next(call)
