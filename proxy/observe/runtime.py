"""GET /admin/runtime: what this process holds right now, for leak checks under load.

Asyncio tasks can only be counted from inside the process; descriptors, threads and memory are included so
one call shows the whole picture. Everything is read when asked: nothing is tracked per request, so the
endpoint costs the hot path nothing. Admin keys only (with no keys configured, callers on this machine):
the numbers are not secret, but they are nobody else's business.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Set

import orjson
from starlette.types import Receive, Scope, Send

from proxy.asgi import JSON_TYPE, send_bytes, send_error, trace_of
from proxy.errors import PermissionDenied

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def snapshot() -> dict[str, int]:
    """Live tasks, threads, open descriptors and resident memory of this process."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: what only /proc can tell is reported as unknown
        fds = rss = -1
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "open_fds": fds,
        "rss_bytes": rss,
    }


class Runtime:
    """The endpoint, as a plain ASGI app. ``admins``: the names of the admin keys; ``keyed``: whether any key
    is configured at all (without keys, callers on this machine are let in, as for the cache purge)."""

    def __init__(self, admins: Set[str], keyed: bool) -> None:
        self.admins = admins
        self.keyed = keyed

    def allowed(self, key: str | None, client: str) -> bool:
        return key in self.admins if self.keyed else client in LOOPBACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = trace_of(scope)
        if not self.allowed(trace.key, trace.client):
            await send_error(send, PermissionDenied("This endpoint needs an admin API key."), [])
            return
        await send_bytes(send, 200, orjson.dumps(snapshot()), [JSON_TYPE])
