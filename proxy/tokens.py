"""Token estimates for when the upstream's own count is not known yet."""

from __future__ import annotations

import orjson

from proxy.types import ChatRequest

CHARS_PER_TOKEN = 4  # English text with common BPE tokenizers; an over-estimate for code is harmless here
MESSAGE_OVERHEAD = 4  # role and separator tokens a chat template adds per message


def estimate_prompt_tokens(req: ChatRequest) -> int:
    chars = 0
    for m in req.messages:
        if isinstance(m.content, str):
            chars += len(m.content)
        elif m.content is not None:
            chars += len(orjson.dumps(m.content))
        chars += sum(len(t.arguments) + len(t.name) for t in m.tool_calls)
    if req.tools:
        chars += len(orjson.dumps(list(req.tools)))
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD * len(req.messages)
