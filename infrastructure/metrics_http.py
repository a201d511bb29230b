"""The internal ``/metrics`` listener of state nodes and edges.

Why a listener of its own: metrics show traffic, users, capacity and internal names; on an
edge's public port anybody on the internet could read them (and a scrape competes with
clients for the same socket accept queue). So ``/metrics`` is served on its own address,
``XPLATFORM_METRICS_HOST``:``XPLATFORM_METRICS_PORT`` (loopback and a free port by default),
which a deployment opens to its Prometheus only. The dev server (``xplatform run``) keeps
``/metrics`` on its own port while that port is loopback (see ``edge/app.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


class MetricsListener:
    """Serves ``GET /metrics`` with whatever ``render()`` returns (Prometheus text format)."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int) -> None:
        self.render = render
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen; the URL of the page (with the bound port when ``port`` was 0)."""
        async def page(request: web.Request) -> web.Response:
            return web.Response(body=self.render(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", page)
        self._runner = web.AppRunner(app, access_log=None)  # Prometheus scrapes every few seconds
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
