"""Where the internal device edge is served: on the public edge's port, or on a listener of its
own; and on the serial lines configured (edge/serial_line.py).

Why a port of its own (``XPLATFORM_EDGE_INTERNAL_PORT`` >= 0): devices are admitted by the
network they come from (edge/internal.py), and that is only as good as the network path to
the port. On the public port the device routes sit beside the websockets the whole internet
reaches (one misconfigured proxy in front, and every request looks like loopback); on a
port of their own, at ``XPLATFORM_EDGE_INTERNAL_HOST``, they are reachable only where the
operator opens that address, the public port answers 404 for ``/internal/...``, and the
allow-list (``XPLATFORM_EDGE_INTERNAL_NETWORKS``) still applies to every request. -1 (the
default) keeps them on the public port, as before the setting existed.

The listener shares the public edge's socket guard (one descriptor budget per process, and
the same handshake deadline for a socket that never sends a request: edge/sockets.py), its
registry and metrics (one device is one connection, whichever port it came in on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from edge.accesslog import RedactingAccessLogger
from edge.config import EdgeConfig
from edge.internal import INTERNAL_EDGE_KEY, InternalEdge
from edge.serial_line import SerialLine
from edge.sockets import SocketGuard, listen


class InternalListener:
    """Serves ``edge``'s device routes (and nothing else) on ``config.internal_host``:``internal_port``."""

    def __init__(self, edge: InternalEdge, config: EdgeConfig, guard: SocketGuard | None) -> None:
        self.edge = edge
        self.config = config
        self.guard = guard
        self.url = ""
        """``http://host:port/internal/`` once listening (the bound port when the setting is 0)."""
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; the URL devices use. Raises :class:`~edge.errors.AddressInUse` when the address is taken."""
        app = web.Application(client_max_size=max(self.config.max_frame_bytes, 1024))
        app.add_routes(self.edge.routes())
        if self.guard is not None:
            app.middlewares.append(self.guard.middleware)
        # a long poll in flight may take its wait to end, as on the public port (edge/app.py serve_app)
        self._runner = web.AppRunner(app, shutdown_timeout=self.config.close_timeout_s * 3,
                                     access_log_class=RedactingAccessLogger)
        await self._runner.setup()
        try:
            self._server = await listen(self._runner, self.guard, self.config.internal_host, self.config.internal_port)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.config.internal_port
        host = self.config.internal_host
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/internal/"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


INTERNAL_LISTENER_KEY = web.AppKey("xplatform_internal_listener", InternalListener)


def mount_internal_edge(app: web.Application, edge: InternalEdge, guard: SocketGuard | None) -> InternalListener | None:
    """Serve ``edge`` for the life of ``app``: its HTTP routes (when device networks are
    configured) on ``app``'s own port while ``internal_port`` is -1, else on an
    :class:`InternalListener` (returned, and kept as ``app[INTERNAL_LISTENER_KEY]``, so the
    caller can print its URL); and a :class:`~edge.serial_line.SerialLine` per configured
    serial port. All start after the edge and stop before it."""
    config = edge.config
    app[INTERNAL_EDGE_KEY] = edge
    listener = None
    if config.internal_networks:
        if config.internal_port < 0:
            app.add_routes(edge.routes())
        else:
            listener = app[INTERNAL_LISTENER_KEY] = InternalListener(edge, config, guard)
    lines = [SerialLine(edge, port, config, edge.metrics) for port in config.serial_ports]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await edge.start()
        started: list[InternalListener | SerialLine] = []
        try:
            parts: list[InternalListener | SerialLine] = [*([listener] if listener is not None else []), *lines]
            for part in parts:
                await part.start()
                started.append(part)
            yield
        finally:
            for part in reversed(started):
                await part.stop()
            await edge.stop()

    app.cleanup_ctx.append(lifecycle)
    return listener
