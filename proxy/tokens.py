"""Token estimates for when the upstream's own count is not known yet."""

from __future__ import annotations

import orjson

from proxy.types import ChatRequest, Completion, Message

CHARS_PER_TOKEN = 4  # English text with common BPE tokenizers; an over-estimate for code is harmless here
MESSAGE_OVERHEAD = 4  # role and separator tokens a chat template adds per message


def estimate_text_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN


def estimate_message_tokens(m: Message) -> int:
    if isinstance(m.content, str):
        chars = len(m.content)
    else:
        chars = len(orjson.dumps(m.content)) if m.content is not None else 0
    if m.tool_calls:  # most messages have none: no generator for them
        chars += sum(len(t.arguments) + len(t.name) for t in m.tool_calls)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD


def estimate_prompt_tokens(req: ChatRequest) -> int:
    tools = len(orjson.dumps(list(req.tools))) // CHARS_PER_TOKEN if req.tools else 0
    return sum(map(estimate_message_tokens, req.messages)) + tools


def completion_tokens(reply: Completion) -> int:
    """The upstream's count of a reply's tokens, else an estimate from its choices."""
    if reply.usage is not None:
        return reply.usage.completion_tokens
    return sum(estimate_message_tokens(choice.message) for choice in reply.choices)
