"""``/metrics``: the one helper every process serves its Prometheus page with.

Why a listener of its own: metrics show traffic, users, capacity and internal names; on an
edge's public port anybody on the internet could read them (and a scrape competes with
clients for the same socket accept queue). So ``/metrics`` is served on its own address,
``XPLATFORM_METRICS_HOST``:``XPLATFORM_METRICS_PORT`` (loopback and a free port by default),
which a deployment opens to its Prometheus only. The exception is the dev server
(``xplatform run``) while its port is loopback (one developer's machine): there the page
stays on the app's own port (:func:`add_metrics`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

Render = Callable[[], bytes]
"""Returns the whole page (Prometheus text format), computed per scrape."""


def _page(render: Render) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler, wherever it is served."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=render(), content_type="text/plain", charset="utf-8")

    return page


class MetricsListener:
    """Serves ``GET /metrics`` with whatever ``render()`` returns, on its own address."""

    def __init__(self, render: Render, host: str, port: int) -> None:
        self.render = render
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen; the URL of the page (with the bound port when ``port`` was 0)."""
        app = web.Application()
        app.router.add_get("/metrics", _page(self.render))
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


def add_metrics(app: web.Application, render: Render, host: str, port: int, *, on_app_port: bool = False) -> MetricsListener | None:
    """Serve ``/metrics`` for the life of ``app``: on the app's own port when ``on_app_port``
    (the loopback dev server), else on a :class:`MetricsListener` at ``host``:``port``, started
    with the app and stopped after it (its URL is printed once it listens; returned, so a
    caller can print it too)."""
    if on_app_port:
        app.router.add_get("/metrics", _page(render))
        return None
    listener = MetricsListener(render, host, port)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        url = await listener.start()
        print(f"metrics at {url} (internal listener)", flush=True)
        yield
        await listener.stop()

    app.cleanup_ctx.append(lifecycle)
    return listener
