"""Ollama's context window, sized per request.

Ollama silently truncates a prompt longer than its ``num_ctx`` (default a few thousand tokens), so a long
conversation loses its beginning without a word. Fluido sets ``num_ctx`` from the prompt's estimate plus the
room the answer needs, rounded up to one of a few sizes within the model's configured maximum, and refuses a
prompt that cannot fit at all. Ollama reloads the model whenever ``num_ctx`` changes, so a size, once grown,
is held for a while instead of flapping between requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.errors import InvalidRequest

SIZES = (2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)
ANSWER_ROOM = 1024  # tokens kept for the answer when the request sets no max_tokens


class ContextSizer:
    """Chooses ``num_ctx`` per model: big enough, from a small set of sizes, sticky upward."""

    def __init__(self, sticky_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.sticky_seconds = sticky_seconds
        self.clock = clock
        self._held: dict[str, tuple[int, float]] = {}  # model -> (size, held until)

    def size(self, model: str, prompt_tokens: int, max_tokens: int | None, maximum: int) -> int:
        if prompt_tokens >= maximum:
            raise InvalidRequest(
                f"The prompt needs about {prompt_tokens} tokens; the model's context holds {maximum}.",
                param="messages",
                code="context_length_exceeded",
            )
        needed = prompt_tokens + (max_tokens or ANSWER_ROOM)
        size = min(next((s for s in SIZES if s >= needed), maximum), maximum)
        now = self.clock()
        held, until = self._held.get(model, (0, 0.0))
        if size >= held or until <= now:
            self._held[model] = (size, now + self.sticky_seconds)
            return size
        return held  # a bigger size is still held: keep it rather than make Ollama reload the model
