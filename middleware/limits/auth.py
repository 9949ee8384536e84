"""Who is calling: the API key (``Authorization: Bearer``) or, with no keys configured, the client's IP.

Plain ASGI around every ``/v1`` and ``/api`` route (Ollama's door), so that chat, embeddings and models are
guarded alike and a refused caller costs no body parsing. Keys are compared as SHA-256 digests in constant
time, against every configured key, so the time taken says nothing about which key came close.
``X-Forwarded-For`` is believed only when the connection comes from a configured trusted proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.limits.config import KeyConfig
from proxy.asgi import encode_headers, header, send_error, trace_of
from proxy.errors import AuthenticationFailed
from proxy.ollama_api.errors import is_ollama_path, send_ollama_error

GUARDED = ("/v1/", "/admin/", "/api/")
_CHALLENGE = encode_headers([("www-authenticate", 'Bearer realm="fluido"')])
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def forwarded_client(peer: str, forwarded_for: bytes | None, trusted: Sequence[Network]) -> str:
    """The first address, from the right, that is not one of our trusted proxies."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or forwarded_for is None or not is_trusted(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.decode("latin-1").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


class KeyMatcher:
    """The configured key an ``Authorization: Bearer`` header carries, if any, found in constant time."""

    def __init__(self, keys: Mapping[str, KeyConfig]) -> None:
        self.digests = [(key.digest, key.name) for key in keys.values()]

    def match(self, authorization: bytes | None) -> str | None:
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return None
        digest = hashlib.sha256(authorization[7:].strip()).digest()
        found = None
        for known, name in self.digests:  # no early exit: every key is compared, every time
            if hmac.compare_digest(known, digest):
                found = name
        return found


class Authenticate:
    """Sets the request's client (key name or IP); answers 401 when keys are configured and none matches."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Mapping[str, KeyConfig],
        trusted_proxies: Sequence[str],
        guarded: tuple[str, ...] = GUARDED,
    ) -> None:
        self.app = app
        self.matcher = KeyMatcher(keys)
        self.digests = self.matcher.digests
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.guarded = guarded

    def match(self, authorization: bytes | None) -> str | None:
        return self.matcher.match(authorization)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.guarded):
            await self.app(scope, receive, send)
            return
        trace = trace_of(scope)
        if self.trusted:  # without trusted proxies, X-Forwarded-For is never read
            trace.client = forwarded_client(trace.client, header(scope, b"x-forwarded-for"), self.trusted)
        if self.digests:
            name = self.matcher.match(header(scope, b"authorization"))
            if name is None:
                error = AuthenticationFailed(
                    "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'."
                )
                trace.error_type, trace.error_code = error.type, error.code or ""
                headers = [*_CHALLENGE, *encode_headers([("x-request-id", trace.request_id)])]
                # Each door answers in its own error shape.
                reply = send_ollama_error if is_ollama_path(scope["path"]) else send_error
                await reply(send, error, headers)
                return
            trace.key = trace.client = name
        await self.app(scope, receive, send)
