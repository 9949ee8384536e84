"""The aiohttp boundary: one pooled session per upstream, and the only place where aiohttp's exceptions
and upstream HTTP statuses become Fluido errors (by type and status, never by message text)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson

from proxy.config_upstreams import UpstreamConfig
from proxy.errors import (
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...


_JSON_HEADERS = {"content-type": "application/json"}
_ERROR_BODY_LIMIT = 64 * 1024
IDLE_CONNECTION_SECONDS = 4.0
_LARGE_BODY = 1024 * 1024  # aiohttp warns that bytes past this may hold the event loop while written
# error.type values that say "your request is wrong": OpenAI's and llama.cpp's, vLLM's exception name.
# llama-cpp-python's server reports its own validation failures as 500 "internal_server_error", the same
# type as a crash: those cannot be told apart from outages without reading the message, which we never do.
REQUEST_ERROR_TYPES = frozenset({"invalid_request_error", "BadRequestError"})


class UpstreamHTTP:
    """A keep-alive connection pool to one upstream, opened on first use."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._session: aiohttp.ClientSession | None = None
        self._headers = dict(_JSON_HEADERS)
        if key := cfg.api_key:
            self._headers["authorization"] = f"Bearer {key}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self.cfg.url + "/",
                # Idle connections are dropped before uvicorn's default 5 s keep-alive (vLLM, llama.cpp's
                # Python server) closes them: reusing one the server is closing fails the request.
                connector=aiohttp.TCPConnector(
                    limit=self.cfg.max_connections, keepalive_timeout=IDLE_CONNECTION_SECONDS
                ),
                # Only connecting is bounded here; first-token, idle and total limits are the router's.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.connect_timeout),
                headers=self._headers,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                auto_decompress=True,
            )
        return self._session

    async def post_json(self, path: str, body: Any) -> Any:
        """POST JSON, return the decoded 2xx reply or raise the matching UpstreamError."""
        try:
            async with self.session.post(path.lstrip("/"), data=_payload(body)) as resp:
                await raise_for_status(self.name, resp)
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise translate(self.name, exc) from exc

    @contextlib.asynccontextmanager
    async def streaming(self, path: str, body: Any) -> AsyncIterator[aiohttp.StreamReader]:
        """POST JSON; the body of the 2xx streamed reply, to read as it arrives. aiohttp's errors, while
        reading it too, become the matching UpstreamError.

        Leaving early (client gone, timeout) exits the response context with its body unread, which makes
        aiohttp close the connection instead of pooling it: the upstream sees the disconnect and stops.
        """
        try:
            async with self.session.post(path.lstrip("/"), data=_payload(body)) as resp:
                await raise_for_status(self.name, resp)
                yield resp.content
        except aiohttp.ClientError as exc:
            raise translate(self.name, exc) from exc

    async def frames(self, path: str, body: Any, decoder: Decoder) -> AsyncGenerator[bytes, None]:
        """POST JSON and yield the framed messages of the streamed reply as they arrive."""
        async with self.streaming(path, body) as content:
            async for data in content.iter_any():
                for frame in decoder.feed(data):
                    yield frame
            for frame in decoder.finish():
                yield frame

    async def get_json(self, path: str) -> Any:
        try:
            async with self.session.get(path.lstrip("/")) as resp:
                await raise_for_status(self.name, resp)
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise translate(self.name, exc) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _payload(body: Any) -> bytes | io.BytesIO:
    """The JSON body; a large one as a file, which aiohttp writes in pieces instead of all at once."""
    data = orjson.dumps(body)
    return io.BytesIO(data) if len(data) >= _LARGE_BODY else data


def translate(name: str, exc: Exception) -> UpstreamError:
    """aiohttp's exception (or an undecodable reply) as the matching UpstreamError, by type."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"Upstream '{name}' timed out ({type(exc).__name__}).")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"Upstream '{name}' is unreachable.")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError(f"Upstream '{name}' broke off its reply.")
    return UpstreamError(f"Upstream '{name}' failed ({type(exc).__name__}).")


def error_message(payload: Any) -> tuple[str | None, str | None]:
    """(message, param) from any of the error shapes upstreams use."""
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, str):  # Ollama: {"error": "..."}
            return err, None
        if isinstance(err, dict):  # OpenAI / vLLM: {"error": {"message", "param", ...}}, or flat
            message, param = err.get("message"), err.get("param")
            return (str(message) if message else None), (param if isinstance(param, str) else None)
    return None, None


def error_type(payload: Any) -> str | None:
    """The ``error.type`` an OpenAI-shaped error body declares, if any."""
    err = payload.get("error") if isinstance(payload, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    return kind if isinstance(kind, str) else None


async def raise_for_status(name: str, resp: aiohttp.ClientResponse) -> None:
    status = resp.status
    if status < 400:
        return
    raw = await resp.content.read(_ERROR_BODY_LIMIT)
    kind = None
    try:
        payload = orjson.loads(raw)
        message, param = error_message(payload)
        kind = error_type(payload)
    except orjson.JSONDecodeError:
        message, param = raw.decode(errors="replace").strip() or None, None
    # An upstream's text is never parroted whole: it may echo the request back (a huge prompt, a key).
    reason = clip(message or resp.reason or "no reason given", 300)
    text = f"Upstream '{name}' answered {status}: {reason}"
    if status >= 500 and kind in REQUEST_ERROR_TYPES:
        # A 5xx whose structured body says the request was invalid is the request's error, not an outage.
        raise UpstreamRejected(text, status=400, param=param)
    raise error_for_status(status, text, param)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def error_for_status(status: int, message: str, param: str | None = None) -> UpstreamError:
    if status in (401, 403):
        # The upstream refused Fluido's own credentials: a configuration problem, not the client's.
        return UpstreamError(message)
    if status == 404:
        return UpstreamRejected(message, status=404, param=param, code="model_not_found", retryable=True)
    if status == 408:
        return UpstreamTimeout(message)
    if status == 429:
        return UpstreamRejected(message, status=429, code="rate_limit_exceeded", retryable=True)
    if status == 422:
        return UpstreamRejected(message, status=400, param=param)
    if status < 500:
        return UpstreamRejected(message, status=status, param=param)
    if status == 503:
        return UpstreamUnavailable(message)
    if status == 504:
        return UpstreamTimeout(message)
    return UpstreamError(message)
