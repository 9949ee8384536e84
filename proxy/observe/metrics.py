"""What feeds Fluido's Prometheus metrics (declared in ``series.py``), and /metrics' rendering.

Label values are bounded: model labels are configured aliases (anything else is ``unknown``), upstream
labels are configured upstream names, routes are Fluido's own paths. No request or user ids, ever.

With several worker processes, ``fluido serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory;
every worker then writes its values there and any worker's ``/metrics`` adds them all up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.observe.series import Series
from proxy.observe.tally import CounterCell, GaugeCell, HistogramCell, Tally
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
SHED_REASONS = frozenset({"queue_full", "deadline_unreachable", "expired", "upstream_unavailable"})


def _stream_label(stream: bool) -> str:
    return "true" if stream else "false"


# The series every finished request may update, in ``Metrics.observe``'s order: the metric's attribute, the
# kind of its cell, and its label values from (route, status, model, upstream, stream).
_PER_REQUEST: tuple[tuple[str, str, Callable[[str, int, str, str, bool], tuple[str, ...]]], ...] = (
    ("requests", "counter",
     lambda route, status, model, upstream, stream: (route, str(status), model, upstream)),
    ("request_duration", "histogram", lambda route, status, model, upstream, stream: (route, model)),
    ("ttft", "histogram", lambda route, status, model, upstream, stream: (model, _stream_label(stream))),
    ("upstream_duration", "histogram", lambda route, status, model, upstream, stream: (upstream,)),
    ("prompt_tokens", "histogram", lambda route, status, model, upstream, stream: (model,)),
    ("completion_tokens", "histogram", lambda route, status, model, upstream, stream: (model,)),
    ("tokens", "counter", lambda route, status, model, upstream, stream: (model, "in")),
    ("tokens", "counter", lambda route, status, model, upstream, stream: (model, "out")),
)  # fmt: skip


class BufferGauges:
    """One upstream's buffer gauges (L, in flight, queue depth). The buffer reports after every admission
    and release, mostly with one value changed (or none): only a changed value is set. The first report
    makes their series and sets all three (no gauge is ever -1)."""

    __slots__ = ("_cells", "_make", "depth", "in_flight", "limit")

    def __init__(self, make: Callable[[], list[GaugeCell]]) -> None:
        self._make = make
        self._cells: list[GaugeCell] | None = None
        self.limit = self.in_flight = self.depth = -1

    def set(self, limit: int, in_flight: int, depth: int) -> None:
        cells = self._cells
        if cells is None:
            cells = self._cells = self._make()
        if in_flight != self.in_flight:
            self.in_flight = in_flight
            cells[1].set(in_flight)
        if limit != self.limit:
            self.limit = limit
            cells[0].set(limit)
        if depth != self.depth:
            self.depth = depth
            cells[2].set(depth)


class Metrics(Series):
    """The metrics of one app, and the bounded label policy that feeds them.

    Updates go to cells (``tally.py``), not to the series: ``render`` writes the cells into the series
    first, so a scrape shows what direct updates would have shown, and a request takes no lock.
    """

    def __init__(self, aliases: Iterable[str], upstreams: Iterable[str], classes: Iterable[str] = ()) -> None:
        self.aliases = frozenset(aliases)
        self.upstreams = frozenset(upstreams)
        self.classes = frozenset(classes)
        self._tally = Tally()
        self._cells: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._request_cells: dict[tuple[str, int, str, str, bool], list[Any]] = {}
        self._circuit_states: dict[str, str] = {}
        self._buffer_gauges: dict[str, BufferGauges] = {}
        self._wait_cells: dict[str, HistogramCell] = {}
        super().__init__()
        self.in_flight_now = self._tally.gauge(self.in_flight)  # what ``in_flight`` will show

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
        # Series are made when first used, as labels() would: a series appears once it has a value.
        if (found := self._request_cells.get(labels)) is None:
            found = self._request_cells[labels] = [None] * len(_PER_REQUEST)
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
        counter = self._counter
        if query_class := notes.get("query_class"):
            counter(self.query_classes, model, query_class if query_class in self.classes else "other").inc()
        if saved := notes.get("tokens_saved"):
            counter(self.tokens_saved, model).inc(int(saved))
        if result := notes.get("cache"):
            counter(self.cache_results, model, result).inc()
        if rag := notes.get("rag"):
            counter(self.rag_requests, model, rag if rag in RAG_RESULTS else "other").inc()
            if ms := notes.get("rag_ms"):
                self._histogram(self.rag_retrieval).observe(float(ms) / 1000)
            if passages := notes.get("rag_passages"):
                self._histogram(self.rag_passages, model).observe(int(passages))
                counter(self.rag_tokens, model).inc(int(notes.get("rag_tokens", "0")))
        if limit := notes.get("rate_limited"):
            counter(self.rate_limited, model, limit).inc()
        for name, kind in trace.upstream_failures:
            counter(self.upstream_errors, self.upstream_label(name), kind).inc()
        if trace.status == 200 and trace.error_type:
            counter(self.stream_errors, model, trace.error_code or trace.error_type).inc()
        if "fallbacks" in notes and trace.status == 200:
            counter(self.fallbacks, model).inc()

    def _fill(self, found: list[Any], i: int, labels: tuple[str, int, str, str, bool]) -> Any:
        """Make the ``i``-th cell of ``_PER_REQUEST`` for one combination of labels, and keep it."""
        name, kind, pick = _PER_REQUEST[i]
        found[i] = self._cell(kind, getattr(self, name), pick(*labels))
        return found[i]

    def _cell(self, kind: str, metric: Any, values: tuple[str, ...]) -> Any:
        """The cell of ``metric.labels(*values)`` (of ``metric`` itself, unlabelled), made once: label
        values are bounded, and labels() is not cheap."""
        key = (id(metric), values)
        found = self._cells.get(key)
        if found is None:
            child = metric.labels(*values) if values else metric
            found = self._cells[key] = getattr(self._tally, kind)(child)
        return found

    def _counter(self, metric: Any, *values: str) -> CounterCell:
        return self._cell("counter", metric, values)  # type: ignore[no-any-return]

    def _gauge(self, metric: Any, *values: str) -> GaugeCell:
        return self._cell("gauge", metric, values)  # type: ignore[no-any-return]

    def _histogram(self, metric: Any, *values: str) -> HistogramCell:
        return self._cell("histogram", metric, values)  # type: ignore[no-any-return]

    def buffer_gauges(self, upstream: str) -> BufferGauges:
        """What the buffer reports one upstream's L, in-flight count and queue depth to (after every
        admission and release: kept by the buffer, so a report looks no labels up)."""
        name = self.upstream_label(upstream)
        found = self._buffer_gauges.get(name)
        if found is None:
            metrics = (self.buffer_limit, self.buffer_in_flight, self.buffer_queue_depth)
            found = self._buffer_gauges[name] = BufferGauges(lambda: [self._gauge(m, name) for m in metrics])
        return found

    def buffer_wait(self, upstream: str, seconds: float) -> None:
        if (cell := self._wait_cells.get(upstream)) is None:
            label = self.upstream_label(upstream)
            cell = self._wait_cells[upstream] = self._histogram(self.buffer_queue_wait, label)
        cell.observe(seconds)

    def buffer_refused(self, upstream: str, reason: str) -> None:
        reason = reason if reason in SHED_REASONS else "other"
        self._counter(self.buffer_shed, self.upstream_label(upstream), reason).inc()

    def stream_event(self, deltas: int, held: float) -> None:
        """One SSE event of a coalesced stream: its deltas, and the longest any of them was held (one
        observation per event, not per delta: this runs for every event of every fast stream)."""
        self._counter(self.stream_events, "events").inc()
        self._counter(self.stream_events, "deltas").inc(deltas)
        self._histogram(self.stream_hold).observe(held)

    def set_circuits(self, breakers: Mapping[str, CircuitBreaker]) -> None:
        for name, breaker in breakers.items():
            # Set only on a change: the value is the same otherwise.
            if self._circuit_states.get(name) != (state := breaker.state):
                self._circuit_states[name] = state
                self._gauge(self.circuit, self.upstream_label(name)).set(CIRCUIT_STATES[state])

    def flush(self) -> None:
        """Write every cell into its series (``render`` does, before each scrape)."""
        self._tally.flush()

    def render(self) -> tuple[bytes, str]:
        self.flush()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
