"""The upstream side of the core: the router (alias -> targets, fallback, per-upstream limits), a circuit
breaker per upstream, the idle watch on streams, the embedded llama.cpp server and the start-up warm-up."""

from proxy.upstream.breaker import CircuitBreaker
from proxy.upstream.embedded import EmbeddedServer
from proxy.upstream.router import Router, Upstream
from proxy.upstream.warmup import warm_up

__all__ = ["CircuitBreaker", "EmbeddedServer", "Router", "Upstream", "warm_up"]
