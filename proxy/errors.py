"""Every error Fluido returns, and the one place that renders them.

    FluidoError
    ├── InvalidRequest            400 invalid_request_error
    ├── AuthenticationFailed      401 authentication_error
    ├── PermissionDenied          403 permission_denied
    ├── ModelNotFound             404 model_not_found
    ├── NotFound                  404 not_found (a file, a vector store)
    ├── RequestTimeout            408 request_timeout (headers or body too slow to arrive)
    ├── BodyTooLarge              413 request_too_large
    ├── UnsupportedEncoding       415 unsupported_encoding (a compressed request body)
    ├── RateLimited               429 rate_limit_exceeded (+ Retry-After)
    ├── Overloaded                429 (shed at arrival) or 503 (expired in the queue, upstream down),
    │                             code = the reason (+ Retry-After)
    ├── StoreUnavailable          503 a store is down (limits failing closed, a cache purge)
    └── UpstreamError             502 upstream_error          retryable: the next target may serve
        ├── UpstreamRejected      the upstream's own 4xx, passed on with its status
        │   └── UpstreamBusy      429: the upstream is at the limit Fluido keeps for it
        ├── UpstreamUnavailable   503 (queue full, every target down, circuit open)
        └── UpstreamTimeout       504

An UpstreamError is a ``fault`` of the upstream (refused or reset connections, timeouts, 5xx, broken streams)
unless the upstream said the request itself was wrong: only faults count towards opening its circuit.

The body is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` so that the official SDK raises
its matching typed exception. Foreign exceptions are translated where they enter (``adapters/http.py``).
"""

from __future__ import annotations

import math

import orjson


class FluidoError(Exception):
    """Base of every error that becomes an HTTP error reply or an in-stream error event."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(FluidoError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(FluidoError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(FluidoError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(FluidoError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(FluidoError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class RequestTimeout(FluidoError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}  # the rest of a late body is not worth waiting for


class BodyTooLarge(FluidoError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedEncoding(FluidoError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_encoding"


class RateLimited(FluidoError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_headers(self.retry_after)


class Overloaded(FluidoError):
    """The adaptive buffer refused the request: shed at arrival (429), or expired in its queue or with
    every upstream down (503). ``code`` says why: queue_full, deadline_unreachable, expired,
    upstream_unavailable."""

    def __init__(self, message: str, *, status: int, code: str, retry_after: float) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.type = "rate_limit_error" if status == 429 else "server_error"
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_headers(self.retry_after)


class StoreUnavailable(FluidoError):
    """A store Fluido needs right now (the rate limiter's, the cache's) cannot be reached."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class UpstreamError(FluidoError):
    """The upstream failed. ``retryable`` tells the router whether another target may succeed."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True
    fault = True  # the upstream's own failure, which counts towards opening its circuit


class UpstreamRejected(UpstreamError):
    """The upstream answered with its own 4xx, passed on with that status.

    Usually the client's to fix (no fallback); a model missing on one upstream (404) or an upstream's own
    rate limit (429) may be served by the next target, so those are retryable. Never a fault: the upstream
    answered, and it was this request it refused.
    """

    fault = False

    def __init__(
        self,
        message: str,
        *,
        status: int,
        param: str | None = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.type = "rate_limit_error" if status == 429 else "invalid_request_error"
        self.retryable = retryable


class UpstreamBusy(UpstreamRejected):
    """An upstream is at the limit configured for it; another target may have room."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, status=429, code="rate_limit_exceeded", retryable=True)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_headers(self.retry_after)


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def retry_headers(seconds: float) -> dict[str, str]:
    # The OpenAI SDKs wait retry-after-ms when present, so clients retry neither early nor late.
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def render(error: FluidoError) -> bytes:
    return orjson.dumps(error.body())
