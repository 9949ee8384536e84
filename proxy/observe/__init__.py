"""What Fluido tells about itself: the ASGI layer that turns each request's Trace into an access record and
metrics, the non-blocking JSON log writer, the Prometheus metrics, and the /ready endpoint."""

from proxy.observe.access import Observability
from proxy.observe.logs import LogWriter, configure_logging
from proxy.observe.metrics import Metrics
from proxy.observe.ready import Dependency, Readiness

__all__ = ["Dependency", "LogWriter", "Metrics", "Observability", "Readiness", "configure_logging"]
