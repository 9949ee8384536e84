"""The operator routes: ``/admin/*``, and ``/metrics`` when ``metrics.require_key`` is on, answer admin API
keys only. With no keys configured there is no admin key to show, so they answer this machine only."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.limits.config import KeyConfig
from proxy.asgi import encode_headers, send_error, trace_of
from proxy.errors import PermissionDenied

ADMIN_PREFIXES = ("/admin/",)


def is_loopback(client: str) -> bool:
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


class AdminOnly:
    """Refuses (403) the operator routes to any caller but an admin key, or this machine when keys are off.

    It sits inside ``Authenticate``, which has already answered 401 to a missing or unknown key and put
    the key's name (or the client's address) on the request's trace.
    """

    def __init__(self, app: ASGIApp, keys: Mapping[str, KeyConfig], prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.admins = frozenset(name for name, key in keys.items() if key.admin)
        self.keys_on = bool(keys)
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            trace = trace_of(scope)
            allowed = trace.key in self.admins if self.keys_on else is_loopback(trace.client)
            if not allowed:
                error = PermissionDenied(
                    "This route needs an admin API key."
                    if self.keys_on
                    else "This route answers this machine only."
                )
                trace.error_type, trace.error_code = error.type, error.code or ""
                await send_error(send, error, encode_headers([("x-request-id", trace.request_id)]))
                return
        await self.app(scope, receive, send)
