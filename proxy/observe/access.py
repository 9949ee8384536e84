"""The outermost layer: one access record and one set of metrics per request, whatever way it ends.

It is plain ASGI (not Starlette's BaseHTTPMiddleware, which breaks contextvars) so it sees the real status,
the first body byte and the end of every response, streams included. Endpoints fill in the request's
``Trace``; this layer reads it when the response is over, or the client has gone.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.asgi import trace_of
from proxy.observe.logs import LogWriter
from proxy.observe.metrics import Metrics
from proxy.types import Trace
from proxy.upstream import CircuitBreaker

log = structlog.get_logger("fluido.access")
CLIENT_CLOSED = 499  # nginx's status for "the client went away before the answer"
# Probes and scrapes arrive every few seconds and say nothing about traffic: counted, not logged.
# "/" is the probe of Ollama's clients ("Ollama is running").
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics", "/"})


def _request_id_var() -> ContextVar[object]:
    """The context variable behind ``structlog.contextvars.bind_contextvars(request_id=...)``: set and reset
    directly, a request's binding costs no keyword dict and no lookup by name."""
    token = structlog.contextvars.bind_contextvars(request_id=None)["request_id"]
    token.var.reset(token)
    return token.var


_REQUEST_ID = _request_id_var()


# The record's own fields that no note is named after: notes go in after them, and never replace one.
_NOT_NOTES = frozenset(
    {
        "request_id", "client", "route", "model", "status", "error_type", "error_code", "stream", "ttfb_ms",
        "duration_ms", "prompt_tokens", "completion_tokens",
    }
)  # fmt: skip


def access_record(trace: Trace, now: float) -> dict[str, object]:
    notes, usage, first_byte = trace.notes, trace.usage, trace.first_byte
    record: dict[str, object] = {
        "request_id": trace.request_id,
        "client": trace.client,
        "route": trace.route,
        "model": trace.model,
        "upstream": notes.get("upstream", ""),
        "upstream_model": notes.get("upstream_model", ""),
        "status": trace.status,
        "error_type": trace.error_type,
        "error_code": trace.error_code,
        "stream": trace.stream,
        "ttfb_ms": round((first_byte - trace.started) * 1000, 2) if first_byte else None,
        "duration_ms": round((now - trace.started) * 1000, 2),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
    }
    if notes.keys().isdisjoint(_NOT_NOTES):
        # The only fields notes share a name with are their own (upstream, upstream_model): same values.
        record.update(notes)
    else:
        for key, value in notes.items():
            record.setdefault(key, value)
    if trace.prompt is not None:
        record["prompt"] = trace.prompt
    if trace.completion is not None:
        record["completion"] = trace.completion
    return record


@functools.lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    """The ISO-8601 form of one UTC second: formatted once per second rather than once per record."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def utc_timestamp() -> str:
    """Now as ``2026-01-02T03:04:05.123456Z``, the shape structlog's ISO time stamps have."""
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    return f"{_utc_second(second)}.{nanos // 1000:06d}Z"


def server_timing(trace: Trace, now: float) -> bytes:
    """``Server-Timing``: Fluido's own time and the upstream's, so curl or a browser shows where time went."""
    total = (now - trace.started) * 1000
    if trace.upstream_ms is None:
        return f"proxy;dur={total:.2f}".encode()
    return f"proxy;dur={max(total - trace.upstream_ms, 0):.2f}, upstream;dur={trace.upstream_ms:.2f}".encode()


class ObservedSend:
    """``send``, noting the status and the first body byte on the way.

    A plain callable that returns ``send``'s own awaitable: a stream calls it once per chunk, and an
    ``async def`` wrapper would add a coroutine to every one of those calls.
    """

    __slots__ = ("_send", "trace")

    def __init__(self, send: Send, trace: Trace) -> None:
        self._send = send
        self.trace = trace

    def __call__(self, message: Message) -> Awaitable[None]:
        trace = self.trace
        if trace.first_byte is None:
            if message["type"] == "http.response.start":
                trace.status = message["status"]
                message["headers"] = [
                    *message["headers"],
                    (b"server-timing", server_timing(trace, time.monotonic())),
                ]
            elif message.get("body"):
                trace.first_byte = time.monotonic()
        return self._send(message)


class Observability:
    """Access log, metrics, request-id log binding and Server-Timing for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics | None,
        access_log: bool,
        breakers: Mapping[str, CircuitBreaker],
        json_lines: LogWriter | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.breakers = breakers
        # JSON logs: access records skip structlog's processors and go straight to the writer, already
        # in the shape structlog gives every other line. Console logs go through structlog for people.
        self.json_lines = json_lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = trace_of(scope)

        observed_send = ObservedSend(send, trace)

        metrics = self.metrics
        # Probes and scrapes are not traffic: a scrape should not see itself in flight.
        counted = metrics is not None and trace.route not in QUIET_ROUTES
        if metrics is not None and counted:
            metrics.in_flight_now.inc()
        bound = _REQUEST_ID.set(trace.request_id)  # structlog's bind_contextvars(request_id=...)
        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            trace.status = trace.status or 500  # what the server will answer for an escaped exception
            raise
        finally:
            if trace.status == 0:
                trace.status = CLIENT_CLOSED
            now = time.monotonic()
            if metrics is not None:
                if counted:
                    metrics.in_flight_now.dec()
                metrics.observe(trace, now)
                metrics.set_circuits(self.breakers)
            if self.access_log and trace.route not in QUIET_ROUTES:
                record = access_record(trace, now)
                if self.json_lines is not None:
                    record["event"], record["level"], record["timestamp"] = "request", "info", utc_timestamp()
                    self.json_lines.write(orjson.dumps(record))
                else:
                    log.info("request", **record)
            _REQUEST_ID.reset(bound)
