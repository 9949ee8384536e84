"""Configuration of the adaptive buffer: the ``[buffer]`` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.config_reader import Reader

# TTFT budgets per query class, in seconds: a queued request's deadline is its arrival plus its budget.
DEFAULT_BUDGETS = {"short": 5.0, "code": 15.0, "reasoning": 15.0, "long": 30.0}
# Shares of L guaranteed per class (lent while unused): short questions always find a slot free of long
# essays, and long essays keep a slot at overload, where short questions would otherwise take every one.
DEFAULT_RESERVE = {"short": 0.25, "long": 0.25}


@dataclass(frozen=True, slots=True)
class UpstreamBuffer:
    """What the buffer is told about one upstream (all optional)."""

    parallel: int = 0  # the upstream's slots when it cannot say (Ollama's OLLAMA_NUM_PARALLEL); 0 = learn
    max_limit: int = 0  # the most in flight L may reach; 0 = the buffer's max_limit
    adaptive: bool = True  # false: L stays at parallel


@dataclass(frozen=True, slots=True)
class BufferConfig:
    enabled: bool = True
    budgets: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    default_budget: float = 15.0  # for a class with no budget (or when the classifier is off)
    reserve: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_RESERVE)
    )  # share of L per class
    queue_bound: int = 64  # waiting requests per upstream; past it new ones are shed at once
    max_limit: int = 64
    openai_initial: int = 4  # L to start from for an OpenAI-compatible server that reports no slots
    tolerance: float = 1.5  # TTFT over its prompt-length cost that counts as waiting inside the upstream
    poll_seconds: float = 0.5  # how often the upstream's own queue and slots are read
    shared_poll_seconds: float = 0.02  # with a Redis-shared count: how often a blocked queue head retries
    coalesce: bool = True  # fast upstreams: text deltas merged into fewer SSE events, each held 10 ms at most
    order: str = "edf"  # "edf": earliest deadline first; "fifo": first come, first served (for comparison)
    upstreams: Mapping[str, UpstreamBuffer] = field(default_factory=dict)

    def budget(self, query_class: str) -> float:
        """A request's TTFT budget. First come, first served knows no classes: one common budget for all,
        as a plain FIFO queue in front of the upstream would have."""
        if self.order == "fifo":
            return self.default_budget
        return self.budgets.get(query_class, self.default_budget)

    def upstream(self, name: str) -> UpstreamBuffer:
        return self.upstreams.get(name, UpstreamBuffer())


def _shares(r: Reader, key: str) -> dict[str, float]:
    """The defaults, with the classes the table names replaced (0 takes a class's reserve away)."""
    shares = dict(DEFAULT_RESERVE)
    for name, value in r.table_of(key).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            r.problems.append(f"buffer.{key}.{name}: must be a number in [0, 1)")
        else:
            shares[name] = float(value)
    if sum(shares.values()) >= 1:
        r.problems.append(
            f"buffer.{key}: the shares must add up to less than 1 (a class not listed keeps"
            f" its default: {DEFAULT_RESERVE})"
        )
    return shares


def _budgets(r: Reader) -> dict[str, float]:
    budgets = dict(DEFAULT_BUDGETS)
    for name, value in r.table_of("budgets").items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            r.problems.append(f"buffer.budgets.{name}: must be a number of seconds above 0")
        else:
            budgets[name] = float(value)
    return budgets


def _upstream(r: Reader, upstreams: Mapping[str, object]) -> dict[str, UpstreamBuffer]:
    found: dict[str, UpstreamBuffer] = {}
    d = UpstreamBuffer()
    for name, table in r.table_of("upstreams").items():
        u = Reader(table, f"buffer.upstreams.{name}", r.problems)
        if name not in upstreams:
            r.problems.append(f"buffer.upstreams.{name}: no upstream named {name!r} in [upstreams]")
        found[name] = UpstreamBuffer(
            parallel=u.integer("parallel", d.parallel, 0, 4096),
            max_limit=u.integer("max_limit", d.max_limit, 0, 4096),
            adaptive=u.boolean("adaptive", d.adaptive),
        )
        if not found[name].adaptive and not found[name].parallel:
            r.problems.append(f"buffer.upstreams.{name}: adaptive = false needs parallel")
        u.done()
    return found


def parse_buffer(r: Reader, upstreams: Mapping[str, object]) -> BufferConfig:
    d = BufferConfig()
    cfg = BufferConfig(
        enabled=r.boolean("enabled", d.enabled),
        budgets=_budgets(r),
        default_budget=r.number("default_budget", d.default_budget),
        reserve=_shares(r, "reserve"),
        queue_bound=r.integer("queue_bound", d.queue_bound, 0),
        max_limit=r.integer("max_limit", d.max_limit, 1, 4096),
        openai_initial=r.integer("openai_initial", d.openai_initial, 1, 4096),
        tolerance=r.number("tolerance", d.tolerance, 1.0),
        poll_seconds=r.number("poll_seconds", d.poll_seconds),
        shared_poll_seconds=r.number("shared_poll_seconds", d.shared_poll_seconds),
        coalesce=r.boolean("coalesce", d.coalesce),
        order=r.text("order", d.order, ("edf", "fifo")),
        upstreams=_upstream(r, upstreams),
    )
    r.done()
    return cfg
