"""Every Prometheus metric Fluido exports, declared in one place.

Label values are bounded: model labels are configured aliases (anything else is ``unknown``), upstream
labels are configured upstream names, routes are Fluido's own paths. No request or user ids, ever.

With several worker processes, ``fluido serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory;
every worker then writes its values there and any worker's ``/metrics`` adds them all up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.types import Trace
from proxy.upstream import CircuitBreaker

ROUTES = frozenset(
    {
        "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/ready", "/metrics",
        # Ollama's door: the route label tells the doors apart.
        "/", "/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/tags", "/api/show",
        "/api/ps", "/api/version",
    }
)  # fmt: skip
RAG_RESULTS = frozenset({"injected", "none", "no_room", "unavailable", "store_missing"})
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HOLD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
SHED_REASONS = frozenset({"queue_full", "deadline_unreachable", "expired", "upstream_unavailable"})


def _stream_label(stream: bool) -> str:
    return "true" if stream else "false"


# The series every finished request may update, in ``Metrics.observe``'s order: the metric's attribute, and
# its label values from (route, status, model, upstream, stream).
_PER_REQUEST: tuple[tuple[str, Callable[[str, int, str, str, bool], tuple[str, ...]]], ...] = (
    ("requests", lambda route, status, model, upstream, stream: (route, str(status), model, upstream)),
    ("request_duration", lambda route, status, model, upstream, stream: (route, model)),
    ("ttft", lambda route, status, model, upstream, stream: (model, _stream_label(stream))),
    ("upstream_duration", lambda route, status, model, upstream, stream: (upstream,)),
    ("prompt_tokens", lambda route, status, model, upstream, stream: (model,)),
    ("completion_tokens", lambda route, status, model, upstream, stream: (model,)),
    ("tokens", lambda route, status, model, upstream, stream: (model, "in")),
    ("tokens", lambda route, status, model, upstream, stream: (model, "out")),
)


class Metrics:
    """The metrics of one app, and the bounded label policy that feeds them."""

    def __init__(self, aliases: Iterable[str], upstreams: Iterable[str], classes: Iterable[str] = ()) -> None:
        # The *_created series would double the series count and tell a dashboard nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.aliases = frozenset(aliases)
        self.upstreams = frozenset(upstreams)
        self.classes = frozenset(classes)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._request_children: dict[tuple[str, int, str, str, bool], list[Any]] = {}
        self._circuit_states: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fluido_requests", "Requests answered, by route, status, model alias and upstream.",
            ["route", "status", "model", "upstream"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "fluido_request_duration_seconds", "Time from request to the end of the response.",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "fluido_time_to_first_token_seconds", "Time from request to the first byte of the answer.",
            ["model", "stream"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_duration = Histogram(
            "fluido_upstream_duration_seconds", "Time the serving upstream took for its reply.",
            ["upstream"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Histogram(
            "fluido_prompt_tokens",
            "Prompt tokens per request.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.completion_tokens = Histogram(
            "fluido_completion_tokens", "Completion tokens per request.", ["model"], buckets=_TOKEN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "fluido_tokens", "Tokens in (prompt) and out (completion).", ["model", "direction"], registry=r
        )
        self.upstream_errors = Counter(
            "fluido_upstream_errors", "Failed upstream attempts, by kind.", ["upstream", "kind"], registry=r
        )
        self.stream_errors = Counter(
            "fluido_stream_errors", "Streams that began (200) and ended with an error event, not [DONE].",
            ["model", "code"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "fluido_fallbacks", "Requests served after moving past a failed target.", ["model"], registry=r
        )
        self.rate_limited = Counter(
            "fluido_rate_limited", "Requests refused by a rate limit, by the limit that refused.",
            ["model", "limit"], registry=r,
        )  # fmt: skip
        self.limiter_unavailable = Counter(
            "fluido_limiter_unavailable", "Rate-limit checks that could not reach their store.", registry=r
        )
        self.query_classes = Counter(
            "fluido_query_class", "Chat requests by query class.", ["model", "query_class"], registry=r
        )
        self.tokens_saved = Counter(
            "fluido_compaction_tokens_saved", "Prompt tokens removed by compaction.", ["model"], registry=r
        )
        self.cache_results = Counter(
            "fluido_cache_requests",
            "Cache outcomes: hit, semantic, miss, bypass.",
            ["model", "result"],
            registry=r,
        )
        self.cache_unavailable = Counter(
            "fluido_cache_unavailable",
            "Cache look-ups or stores that could not reach their store.",
            registry=r,
        )
        self.rag_requests = Counter(
            "fluido_rag_requests",
            "Chat requests that asked for RAG, by outcome: injected, none (nothing above the minimum score), "
            "no_room, unavailable (Chroma down or retrieval loading), store_missing.",
            ["model", "result"],
            registry=r,
        )
        self.rag_retrieval = Histogram(
            "fluido_rag_retrieval_seconds", "Time to retrieve passages for one chat request.",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5), registry=r,
        )  # fmt: skip
        self.rag_passages = Histogram(
            "fluido_rag_passages_injected", "Passages injected into one chat request.", ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 20, 50), registry=r,
        )  # fmt: skip
        self.rag_tokens = Counter(
            "fluido_rag_tokens_added",
            "Prompt tokens (estimated) added by RAG context.",
            ["model"],
            registry=r,
        )
        self.log_dropped = Counter(
            "fluido_log_records_dropped", "Log records dropped because the log queue was full.", registry=r
        )
        self.in_flight = Gauge(
            "fluido_requests_in_flight",
            "Requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.buffer_limit = Gauge(
            "fluido_buffer_limit", "Requests the buffer lets run at once on each upstream (L).",
            ["upstream"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.buffer_in_flight = Gauge(
            "fluido_buffer_in_flight", "Requests running on each upstream through the buffer.",
            ["upstream"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.buffer_queue_depth = Gauge(
            "fluido_buffer_queue_depth", "Requests waiting in the buffer's queue for each upstream.",
            ["upstream"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.buffer_queue_wait = Histogram(
            "fluido_buffer_queue_wait_seconds", "Time requests waited in the buffer for a slot.",
            ["upstream"], buckets=_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.buffer_shed = Counter(
            "fluido_buffer_shed",
            "Requests the buffer refused, by reason.",
            ["upstream", "reason"],
            registry=r,
        )
        self.stream_events = Counter(
            "fluido_stream_events", "SSE events of coalesced streams, and the deltas they carried.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.stream_hold = Histogram(
            "fluido_stream_coalesce_hold_seconds", "How long a coalesced event's oldest delta waited.",
            buckets=_HOLD_BUCKETS, registry=r,
        )  # fmt: skip
        self.circuit = Gauge(
            "fluido_upstream_circuit_state", "Circuit state per upstream: 0 closed, 1 half-open, 2 open.",
            ["upstream"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip

    def model_label(self, alias: str) -> str:
        return alias if alias in self.aliases else "unknown"

    def upstream_label(self, name: str | None) -> str:
        return name if name in self.upstreams else "none"

    def observe(self, trace: Trace, now: float) -> None:
        """Record one finished request."""
        notes = trace.notes
        route = trace.route if trace.route in ROUTES else "other"
        model = self.model_label(trace.model)
        # Keyed by label values only, which are bounded: never by what a client sent.
        labels = (route, trace.status, model, self.upstream_label(notes.get("upstream")), trace.stream)
        # Children are made when first used, as labels() would: a series appears once it has a value.
        if (found := self._request_children.get(labels)) is None:
            found = self._request_children[labels] = [None] * len(_PER_REQUEST)
        fill = self._fill
        (found[0] or fill(found, 0, labels)).inc()
        (found[1] or fill(found, 1, labels)).observe(now - trace.started)
        if trace.first_byte is not None and trace.status == 200 and trace.model:
            (found[2] or fill(found, 2, labels)).observe(trace.first_byte - trace.started)
        if trace.upstream_ms is not None and labels[3] != "none":
            (found[3] or fill(found, 3, labels)).observe(trace.upstream_ms / 1000)
        if (usage := trace.usage) is not None:
            (found[4] or fill(found, 4, labels)).observe(usage.prompt_tokens)
            (found[5] or fill(found, 5, labels)).observe(usage.completion_tokens)
            (found[6] or fill(found, 6, labels)).inc(usage.prompt_tokens)
            (found[7] or fill(found, 7, labels)).inc(usage.completion_tokens)
        child = self._child
        if query_class := notes.get("query_class"):
            child(self.query_classes, model, query_class if query_class in self.classes else "other").inc()
        if saved := notes.get("tokens_saved"):
            child(self.tokens_saved, model).inc(int(saved))
        if result := notes.get("cache"):
            child(self.cache_results, model, result).inc()
        if rag := notes.get("rag"):
            child(self.rag_requests, model, rag if rag in RAG_RESULTS else "other").inc()
            if ms := notes.get("rag_ms"):
                self.rag_retrieval.observe(float(ms) / 1000)
            if passages := notes.get("rag_passages"):
                child(self.rag_passages, model).observe(int(passages))
                child(self.rag_tokens, model).inc(int(notes.get("rag_tokens", "0")))
        if limit := notes.get("rate_limited"):
            child(self.rate_limited, model, limit).inc()
        for name, kind in trace.upstream_failures:
            child(self.upstream_errors, self.upstream_label(name), kind).inc()
        if trace.status == 200 and trace.error_type:
            child(self.stream_errors, model, trace.error_code or trace.error_type).inc()
        if "fallbacks" in notes and trace.status == 200:
            child(self.fallbacks, model).inc()

    def _fill(self, found: list[Any], i: int, labels: tuple[str, int, str, str, bool]) -> Any:
        """Make the ``i``-th child of ``_PER_REQUEST`` for one combination of labels, and keep it."""
        name, pick = _PER_REQUEST[i]
        found[i] = self._child(getattr(self, name), *pick(*labels))
        return found[i]

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: label values are bounded, and labels() is not cheap."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def set_buffer(self, upstream: str, limit: int, in_flight: int, depth: int) -> None:
        name = self.upstream_label(upstream)
        self._child(self.buffer_limit, name).set(limit)
        self._child(self.buffer_in_flight, name).set(in_flight)
        self._child(self.buffer_queue_depth, name).set(depth)

    def buffer_wait(self, upstream: str, seconds: float) -> None:
        self._child(self.buffer_queue_wait, self.upstream_label(upstream)).observe(seconds)

    def buffer_refused(self, upstream: str, reason: str) -> None:
        reason = reason if reason in SHED_REASONS else "other"
        self._child(self.buffer_shed, self.upstream_label(upstream), reason).inc()

    def stream_event(self, deltas: int, held: float) -> None:
        self._child(self.stream_events, "events").inc()
        self._child(self.stream_events, "deltas").inc(deltas)
        self.stream_hold.observe(held)

    def set_circuits(self, breakers: Mapping[str, CircuitBreaker]) -> None:
        for name, breaker in breakers.items():
            # Set only on a change: the value is the same otherwise, and every set takes a lock.
            if self._circuit_states.get(name) != (state := breaker.state):
                self._circuit_states[name] = state
                self._child(self.circuit, self.upstream_label(name)).set(CIRCUIT_STATES[state])

    def render(self) -> tuple[bytes, str]:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
