"""Prompt token counts for compaction budgets, in the upstream's own tokens where it can count them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from proxy.errors import UpstreamError
from proxy.tokens import MESSAGE_OVERHEAD, estimate_message_tokens, estimate_text_tokens
from proxy.types import Message


class Tokenizer(Protocol):
    async def count_tokens(self, text: str, model: str) -> int: ...


class TokenCounter:
    """Prompt token counts for compaction budgets: the upstream's own tokenizer where it has one (vLLM's
    /tokenize, for upstreams configured with ``tokenize = true``), the estimate otherwise. Counts are
    remembered per text, since a conversation resends its old turns with every new one."""

    def __init__(self, tokenizers: Mapping[str, tuple[Tokenizer, str]], cache_size: int = 8192) -> None:
        self.tokenizers = tokenizers  # alias -> (tokenizer, the model name it knows)
        self.cache_size = cache_size
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def knows(self, alias: str) -> bool:
        """Whether ``alias``'s counts come from a tokenizer (the estimate otherwise)."""
        return alias in self.tokenizers

    async def counter(self, alias: str, messages: Sequence[Message]) -> Callable[[Message], int]:
        """A count function for these messages: their real counts fetched now, the estimate as fallback."""
        found = self.tokenizers.get(alias)
        if found is None:
            return estimate_message_tokens
        tokenizer, model = found
        known: dict[str, int] = {}
        for m in messages:
            if isinstance(m.content, str) and m.content and m.content not in known:
                known[m.content] = await self._count(tokenizer, model, m.content)

        def count(m: Message) -> int:
            real = known.get(m.content) if isinstance(m.content, str) else None
            return real + MESSAGE_OVERHEAD if real is not None else estimate_message_tokens(m)

        return count

    async def _count(self, tokenizer: Tokenizer, model: str, text: str) -> int:
        key = (model, text)
        if (cached := self._counts.get(key)) is not None:
            self._counts.move_to_end(key)
            return cached
        try:
            counted = await tokenizer.count_tokens(text, model)
        except UpstreamError:
            return estimate_text_tokens(text)  # the estimate for now; the next request asks again
        self._counts[key] = counted
        if len(self._counts) > self.cache_size:
            self._counts.popitem(last=False)
        return counted
