"""Prompt compaction as a chain link: every prompt is cleaned up (whitespace outside code and quotes, empty
and repeated system messages), and old turns are trimmed to the query class's token budget. The rules
and their invariants are in ``proxy/compaction.py``; tokens saved become a note and a counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from proxy.compaction import compact
from proxy.config_profiles import Profile
from proxy.tokens import estimate_message_tokens
from proxy.types import Call, Handler, Reply


class Compact:
    """Runs after the classifier, whose note names the class and so the budget."""

    def __init__(self, profiles: Mapping[str, Profile]) -> None:
        self.profiles = profiles

    async def __call__(self, call: Call, next: Handler) -> Reply:
        profile = self.profiles.get(call.notes.get("query_class", ""))
        budget = profile.budget if profile is not None and profile.budget > 0 else None
        result = compact(call.request.messages, budget, estimate_message_tokens)
        if result.messages != call.request.messages:
            call.request = dataclasses.replace(call.request, messages=result.messages)
            if result.saved > 0:
                call.notes["tokens_saved"] = str(result.saved)
        return await next(call)
