"""POST /admin/cache/purge: the cache's one route, and who may use it."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.types import Receive, Scope, Send

from middleware.cache.flow import ResponseCache
from middleware.cache.store import CacheUnavailable
from middleware.limits import KeyConfig
from proxy.asgi import (
    JSON_TYPE,
    BodyLimits,
    ClientGone,
    failed,
    note_headers,
    send_bytes,
    send_error,
    trace_of,
)
from proxy.errors import FluidoError, InvalidRequest, PermissionDenied, StoreUnavailable
from proxy.parsing import decode_object


class Purge:
    """POST /admin/cache/purge ``{"namespace": "key-tutor"}`` (or no body: everything). Admin keys only;
    with no keys configured, only from this machine."""

    def __init__(self, cache: ResponseCache, keys: Mapping[str, KeyConfig]) -> None:
        self.cache = cache
        self.keys = keys

    def allowed(self, trace_key: str | None, client: str) -> bool:
        if self.keys:
            key = self.keys.get(trace_key or "")
            return key is not None and key.admin
        return client in ("127.0.0.1", "::1", "localhost")

    async def purge(self, namespace: str | None) -> int:
        removed = await self.cache.store.purge(namespace)
        if self.cache.index is not None:
            await self.cache.index.purge(namespace)
        return removed


class CachePurge:
    """POST /admin/cache/purge: empties one cache namespace, or all of it."""

    def __init__(self, purge: Purge, limits: BodyLimits) -> None:
        self.purge = purge
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        try:
            body = await self.limits.read(scope, receive)
            if not self.purge.allowed(trace.key, trace.client):
                raise PermissionDenied("Purging the cache needs an admin API key.")
            namespace = decode_object(body).get("namespace") if body.strip() else None
            if namespace is not None and not isinstance(namespace, str):
                raise InvalidRequest("'namespace' must be a string.", param="namespace")
            removed = await self.purge.purge(namespace)
        except ClientGone:
            return
        except FluidoError as exc:
            await send_error(send, failed(trace, exc), note_headers(trace))
            return
        except CacheUnavailable:
            error = StoreUnavailable(
                "The cache store cannot be reached; nothing was purged.", code="cache_unavailable"
            )
            await send_error(send, failed(trace, error), note_headers(trace))
            return
        await send_bytes(send, 200, orjson.dumps({"purged": removed, "namespace": namespace}), [JSON_TYPE])
