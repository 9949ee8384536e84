"""Every error Fluido returns, and the one place that renders them.

    FluidoError
    ├── InvalidRequest            400 invalid_request_error
    ├── AuthenticationFailed      401 authentication_error
    ├── ModelNotFound             404 model_not_found
    ├── BodyTooLarge              413 request_too_large
    ├── RateLimited               429 rate_limit_exceeded (+ Retry-After)
    └── UpstreamError             502 upstream_error          retryable: the next target may serve
        ├── UpstreamRejected      the upstream's own 4xx, passed on with its status
        ├── UpstreamUnavailable   503 (queue full, every target down, circuit open)
        └── UpstreamTimeout       504

The body is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` so that the official SDK raises
its matching typed exception. Foreign exceptions are translated where they enter (``adapters/http.py``).
"""

from __future__ import annotations

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


class ModelNotFound(FluidoError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(FluidoError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(FluidoError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after)))}


class UpstreamError(FluidoError):
    """The upstream failed. ``retryable`` tells the router whether another target may succeed."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamRejected(UpstreamError):
    """The upstream answered with its own 4xx, passed on with that status.

    Usually the client's to fix (no fallback); a model missing on one upstream (404) or an upstream's own
    rate limit (429) may be served by the next target, so those are retryable.
    """

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


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def render(error: FluidoError) -> bytes:
    return orjson.dumps(error.body())
