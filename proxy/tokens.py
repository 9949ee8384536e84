"""Token estimates for when the upstream's own count is not known yet."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import orjson

from proxy.errors import UpstreamError
from proxy.types import ChatRequest, Message

CHARS_PER_TOKEN = 4  # English text with common BPE tokenizers; an over-estimate for code is harmless here
MESSAGE_OVERHEAD = 4  # role and separator tokens a chat template adds per message


def estimate_text_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN


def estimate_message_tokens(m: Message) -> int:
    if isinstance(m.content, str):
        chars = len(m.content)
    else:
        chars = len(orjson.dumps(m.content)) if m.content is not None else 0
    chars += sum(len(t.arguments) + len(t.name) for t in m.tool_calls)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD


def estimate_prompt_tokens(req: ChatRequest) -> int:
    tools = len(orjson.dumps(list(req.tools))) // CHARS_PER_TOKEN if req.tools else 0
    return sum(map(estimate_message_tokens, req.messages)) + tools


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
