"""``/metrics`` on a port of its own (``metrics.port``), so scrapes can stay on an internal network while the
API port faces clients. Every worker process binds the port with SO_REUSEPORT; whichever one answers a
scrape reports all of them (the multi-process collector adds their values up)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

from proxy.errors import AuthenticationFailed, render


class MetricsListener:
    """A small HTTP server answering ``GET /metrics`` and nothing else."""

    def __init__(
        self,
        host: str,
        port: int,
        render_metrics: Callable[[], tuple[bytes, str]],
        authorized: Callable[[bytes | None], bool] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.render_metrics = render_metrics
        self.authorized = authorized  # None: open to whoever can reach the port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one port, every worker
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        await web.SockSite(self._runner, sock).start()

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.authorized is not None:
            authorization = request.headers.get("Authorization")
            if not self.authorized(authorization.encode("latin-1") if authorization is not None else None):
                error = AuthenticationFailed("Scraping /metrics needs an admin API key.")
                return web.Response(
                    status=error.status, body=render(error), content_type="application/json",
                    headers={"www-authenticate": 'Bearer realm="fluido"'},
                )  # fmt: skip
        body, content_type = self.render_metrics()
        return web.Response(body=body, headers={"content-type": content_type})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
