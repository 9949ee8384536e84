"""The declarations of every Prometheus metric Fluido exports: names, help texts, labels and buckets.

What feeds them, and the bounded label policy, is ``metrics.py``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HOLD_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.05, 0.1, 0.2, 0.5, 1)


class Series:
    """The metrics of one app, each in this instance's own registry."""

    def __init__(self) -> None:
        # The *_created series would double the series count and tell a dashboard nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
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
            "fluido_stream_coalesce_hold_seconds", "Per coalesced event, how long its oldest delta was held.",
            buckets=_HOLD_BUCKETS, registry=r,
        )  # fmt: skip
        self.circuit = Gauge(
            "fluido_upstream_circuit_state", "Circuit state per upstream: 0 closed, 1 half-open, 2 open.",
            ["upstream"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
