"""Types shared by the app, the middleware chain, the router and the adapters.

Everything that crosses a layer is a frozen, slotted dataclass. Fields that Fluido does not interpret
travel in ``extra`` mappings and are passed to OpenAI-compatible upstreams verbatim.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias

JSON: TypeAlias = Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call in a message; ``arguments`` is a JSON string, as in OpenAI's API."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``content`` is a string, a list of content parts, or None."""

    role: str
    content: str | list[JSON] | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    extra: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated /v1/chat/completions request."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int = 1
    tools: tuple[Mapping[str, JSON], ...] = ()
    tool_choice: JSON = None
    response_format: Mapping[str, JSON] | None = None
    # Set by the query-class profile: defaults under the client's own values, per upstream kind.
    profile_ollama_options: Mapping[str, JSON] = field(default_factory=dict)
    profile_extra: Mapping[str, JSON] = field(default_factory=dict)
    # Every other field of the body (vLLM's extras, logprobs, user, ...), passed through verbatim.
    extra: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated /v1/embeddings request; ``input`` is a list of strings or of token lists."""

    model: str
    input: tuple[str | tuple[int, ...], ...]
    single: bool
    extra: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call. The first piece of a call carries ``id``, ``type`` and ``name``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, init=False)
class Chunk:
    """One normalized streamed event. A chunk with only ``usage`` set is the usage chunk.

    One is built for every token, so it has its own ``__init__``: a frozen dataclass's sets its fields
    one call at a time, which costs twice this one, that sets them all at once (and so has no slots).
    """

    index: int = 0
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    logprobs: JSON = None
    usage: Usage | None = None
    # Facts the upstream reported about itself (model load time, ...): for logs, never sent to clients.
    meta: Mapping[str, JSON] = field(default_factory=dict)

    def __init__(
        self,
        index: int = 0,
        role: str | None = None,
        content: str | None = None,
        reasoning: str | None = None,
        tool_calls: tuple[ToolCallDelta, ...] = (),
        finish_reason: str | None = None,
        logprobs: JSON = None,
        usage: Usage | None = None,
        meta: Mapping[str, JSON] | None = None,
    ) -> None:
        fields = {
            "index": index,
            "role": role,
            "content": content,
            "reasoning": reasoning,
            "tool_calls": tool_calls,
            "finish_reason": finish_reason,
            "logprobs": logprobs,
            "usage": usage,
            "meta": {} if meta is None else meta,
        }
        object.__setattr__(self, "__dict__", fields)

    @property
    def carries_output(self) -> bool:
        """True when the chunk holds generated output: text, reasoning, tool calls or the finish."""
        return bool(self.content or self.reasoning or self.tool_calls) or self.finish_reason is not None


# The fields of a chunk that carries only text, copied by ``text_chunk``; its meta is shared, so read-only.
_TEXT_FIELDS = {**Chunk().__dict__, "meta": MappingProxyType({})}


def text_chunk(index: int, content: str) -> Chunk:
    """``Chunk(index, content=content)``, the chunk of most tokens, in half the time: one copy of a
    prepared dict in place of the general ``__init__``'s nine arguments."""
    chunk = object.__new__(Chunk)
    fields = _TEXT_FIELDS.copy()
    fields["index"] = index
    fields["content"] = content
    object.__setattr__(chunk, "__dict__", fields)
    return chunk


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    message: Message
    finish_reason: str | None
    logprobs: JSON = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A complete (non-streamed) chat completion."""

    choices: tuple[Choice, ...]
    usage: Usage | None = None
    meta: Mapping[str, JSON] = field(default_factory=dict)


Stream: TypeAlias = AsyncGenerator[Chunk, None]
Reply: TypeAlias = Completion | Stream


@dataclass(slots=True)
class Trace:
    """What one request did, filled in as it travels; the access log and the metrics read it at its end."""

    request_id: str
    client: str
    route: str
    started: float  # time.monotonic()
    key: str | None = None  # the API key's name, once authenticated
    cache_control: str = ""  # the request's Cache-Control header, lowercased
    model: str = ""
    stream: bool = False
    status: int = 0
    error_type: str = ""
    error_code: str = ""
    first_byte: float | None = None  # monotonic time the first body byte was sent
    upstream_ms: float | None = None  # the serving upstream's time: whole reply, or to first output
    launch_seconds: float = 0.0  # time spent waiting for an embedded upstream to start (not serving)
    usage: Usage | None = None
    # (upstream, error code) for each failed attempt, in order.
    upstream_failures: list[tuple[str, str]] = field(default_factory=list)
    # Facts middleware and the router learn (query class, cache status, upstream, ...). They become
    # ``x-fluido-*`` response headers and access-log fields.
    notes: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (x-ratelimit-*)
    prompt: str | None = None  # only kept when content logging is on
    completion: str | None = None


@dataclass(slots=True)
class Call:
    """One chat request as it travels down the chain. Middleware may replace ``request``."""

    request: ChatRequest
    trace: Trace

    @property
    def notes(self) -> dict[str, str]:
        return self.trace.notes


Handler: TypeAlias = Callable[[Call], Awaitable[Reply]]


class Middleware(Protocol):
    """One link of the chain: configured once, then called for every request."""

    async def __call__(self, call: Call, next: Handler) -> Reply: ...


@dataclass(frozen=True, slots=True)
class Target:
    """One place an alias can be served from: an upstream and the model name it knows."""

    upstream: str
    model: str
    keep_alive: str | int | None = None
    options: Mapping[str, JSON] = field(default_factory=dict)
    max_context: int = 0  # Ollama: the model's largest num_ctx; > 0 turns on per-request context sizing


class Adapter(Protocol):
    """Speaks one upstream protocol. Owns wire translation and nothing else."""

    async def chat(self, req: ChatRequest, target: Target) -> Completion: ...

    def stream(self, req: ChatRequest, target: Target) -> Stream: ...

    async def embed(self, req: EmbeddingRequest, target: Target) -> JSON: ...

    async def models(self) -> list[str]: ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...
