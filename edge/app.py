"""Composition of the edges on a one-process :class:`~infrastructure.bootstrap.Platform`
(dev mode), and the server ``xplatform run`` starts.

One aiohttp application serves: the public edge (``/ws/...``), the internal edge
(``/internal/...``, only when device networks are configured), ``/metrics`` (edge and node
registries), the dev token issuer (``/dev/token``, only when ``edge_dev_tokens`` is on) and
the demo page (``/`` → ``edge/static/demo.html``, ``/static/`` → ``edge/static/``).

The dev token issuer: ``GET /dev/token?sub=<name>&role=<role>`` → ``{"token", "expires_in"}``,
an ES256 token signed with a key pair made at start (its public key is trusted by this
edge only; ``iss``/``aud`` are the configured ones, else ``xplatform-dev``). Off unless
``XPLATFORM_EDGE_DEV_TOKENS=1``; ``xplatform run`` turns it on because it is the dev mode,
and refuses to start with it on a non-loopback address unless told so explicitly
(``edge/config.py``). It answers only requests whose ``Host`` is a loopback name (403
``host_not_allowed`` otherwise): a DNS-rebinding page reaches a loopback server under its
own name, and must not get a token. Tokens are never logged (``edge/accesslog.py``).

``/metrics`` stays on this server's port while it listens on loopback (dev: one developer's
machine); on any other address it moves to the internal metrics listener
(``XPLATFORM_METRICS_HOST``/``_PORT``, :mod:`infrastructure.metrics_http`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest
from yarl import URL

from edge.accesslog import RedactingAccessLogger
from edge.auth import DevTokenIssuer
from edge.config import EdgeConfig, is_ip_literal, is_loopback
from edge.internal import InternalEdge, add_internal_edge
from edge.metrics import EdgeMetrics
from edge.public import EDGE_KEY, PublicEdge, add_public_edge, build_verifier
from edge.sockets import listen, raise_open_file_limit
from infrastructure.bootstrap import Platform
from infrastructure.metrics_http import MetricsListener
from infrastructure.transport.port import Transport

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

PLATFORM_KEY = web.AppKey("xplatform_platform", Platform)
DEV_ISSUER_KEY = web.AppKey("xplatform_dev_issuer", DevTokenIssuer)
CONFIG_KEY = web.AppKey("xplatform_edge_config", EdgeConfig)
METRICS_LISTENER_KEY = web.AppKey("xplatform_metrics_listener", MetricsListener)


def build_edge_app(platform: Platform, config: EdgeConfig | None = None, *, manage_platform: bool = False,
                   static_dir: Path | None = STATIC_DIR) -> web.Application:
    """The edge application for ``platform``. ``manage_platform``: start and stop the
    platform with the app (the platform starts before the edge and stops after it)."""
    config = config or EdgeConfig.from_settings(platform.settings)
    app = edge_app(platform.transport, platform.node.types.categories, config, static_dir=static_dir,
                   node_metrics=lambda: generate_latest(platform.node.metrics.registry))
    app[PLATFORM_KEY] = platform
    if manage_platform:
        async def platform_lifecycle(app: web.Application) -> AsyncIterator[None]:
            await platform.start()
            yield
            await platform.stop()

        app.cleanup_ctx.insert(0, platform_lifecycle)  # the platform starts before the edge, stops after it
    return app


def edge_app(transport: Transport, categories: Collection[str], config: EdgeConfig, *,
             static_dir: Path | None = STATIC_DIR, node_metrics: Callable[[], bytes] | None = None,
             dev_issuer: DevTokenIssuer | None = None, public_metrics: bool = True) -> web.Application:
    """The public edge (and the internal one when device networks are configured), the dev
    token issuer when ``config.dev_tokens`` (``dev_issuer``: a shared key, e.g. the edge
    workers of one ``xplatform run``; default: a key made here), ``/metrics`` (this edge's
    registry, plus ``node_metrics()`` when the node lives in this process; on this port while it
    is loopback and ``public_metrics``, else on the internal listener, ``app[METRICS_LISTENER_KEY]``)
    and the demo page, over ``transport``: the in-process one (dev mode) or the network client (edge workers)."""
    metrics = EdgeMetrics()
    verifier = build_verifier(config)
    app = web.Application(client_max_size=max(config.max_frame_bytes, 1024))
    app[CONFIG_KEY] = config
    if config.dev_tokens:
        if not is_loopback(config.host):
            log.warning("DEV TOKENS ARE SERVED ON THE NETWORK (%s): anyone who reaches this port can get a token "
                        "for any user and role. Never do this outside a trusted lab network.", config.host)
        issuer = dev_issuer or DevTokenIssuer(config.token_issuer, config.token_audience)
        verifier.keys.add_jwks(issuer.jwks())
        app[DEV_ISSUER_KEY] = issuer
        app.router.add_get("/dev/token", _dev_token)
    public = PublicEdge(transport, config, categories=categories, verifier=verifier, metrics=metrics)
    add_public_edge(app, public)
    if config.internal_networks:
        add_internal_edge(app, InternalEdge(transport, config, registry=public.registry, metrics=metrics,
                                            categories=categories, load=public.load))

    def render_metrics() -> bytes:
        return metrics.exposition() + (node_metrics() if node_metrics is not None else b"")

    if public_metrics and is_loopback(config.host):
        async def metrics_page(request: web.Request) -> web.Response:
            return web.Response(body=render_metrics(), content_type="text/plain", charset="utf-8")

        app.router.add_get("/metrics", metrics_page)
    else:
        listener = app[METRICS_LISTENER_KEY] = MetricsListener(render_metrics, config.metrics_host, config.metrics_port)
        add_metrics_listener(app, listener)
    if static_dir is not None:
        _add_static(app, static_dir)
    return app


def add_metrics_listener(app: web.Application, listener: MetricsListener) -> None:
    """Run ``listener`` (the internal ``/metrics``) for the life of ``app``; its URL is logged."""
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        url = await listener.start()
        print(f"metrics at {url} (internal listener)", flush=True)
        yield
        await listener.stop()

    app.cleanup_ctx.append(lifecycle)


def _dev_token_host_allowed(request: web.Request, config: EdgeConfig) -> bool:
    """Only loopback names (or, with dev tokens explicitly on the network, IP literals) in
    ``Host``: a DNS-rebinding page always arrives under a name its author controls."""
    try:
        name = URL(f"http://{request.headers.get('Host', '')}/").host or ""
    except ValueError:
        return False
    return is_loopback(name) or (config.dev_tokens_on_network and is_ip_literal(name))


async def _dev_token(request: web.Request) -> web.Response:
    if not _dev_token_host_allowed(request, request.app[CONFIG_KEY]):
        return web.json_response({"error": "host_not_allowed", "reason": "dev tokens are served to loopback "
                                  "hosts only (http://127.0.0.1:<port>/ or http://localhost:<port>/)"}, status=403)
    sub = request.query.get("sub", "")
    role = request.query.get("role", "")
    if not _NAME.match(sub) or (role and not _NAME.match(role)):
        return web.json_response({"error": "bad_request", "reason": "sub (and role) must be 1-64 of A-Z a-z 0-9 _ . @ -"},
                                 status=400)
    issuer = request.app[DEV_ISSUER_KEY]
    return web.json_response({"token": issuer.issue(sub, role), "expires_in": issuer.ttl_s},
                             headers={"Cache-Control": "no-store"})


def _add_static(app: web.Application, static_dir: Path) -> None:
    """Serve whatever is in ``static_dir`` (the browser client and demo page live there)."""
    async def index(request: web.Request) -> web.StreamResponse:
        page = static_dir / "demo.html"
        if not page.is_file():
            return web.Response(text="X Platform edge: no demo page installed (edge/static/demo.html)\n")
        return web.FileResponse(page)

    app.router.add_get("/", index)
    if static_dir.is_dir():
        app.router.add_static("/static/", static_dir, follow_symlinks=False)


async def serve(platform: Platform, config: EdgeConfig, ready: asyncio.Event | None = None) -> None:
    """Run the dev server until SIGINT/SIGTERM (Ctrl-C); print the URL when it listens."""
    raise_open_file_limit()
    def announce(port: int) -> None:
        metrics_at = "metrics at /metrics" if is_loopback(config.host) else "metrics on the internal listener"
        print(f"X Platform serving on http://{config.host}:{port}/  (demo page; websocket at /ws/<category>/<id>; "
              f"{metrics_at}{'; dev tokens at /dev/token' if config.dev_tokens else ''}) - Ctrl-C stops",
              flush=True)
        if ready is not None:
            ready.set()

    await serve_app(build_edge_app(platform, config, manage_platform=True), config, announce)


async def serve_app(app: web.Application, config: EdgeConfig, announce: Callable[[int], None],
                    sock: socket.socket | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` on the configured address (or on the listening socket ``sock``, e.g.
    one shared by edge workers) until SIGINT/SIGTERM or ``stop`` is set; ``announce(port)``
    once listening (port 0 picks a free one). Shutdown runs the app's GOING_AWAY handlers."""
    runner = web.AppRunner(app, shutdown_timeout=config.close_timeout_s * 3, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        server = await listen_public(runner, app, config.host, config.port, sock=sock)
    except BaseException:
        await runner.cleanup()  # the platform started with the app: stop it, close its journal
        raise
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        announce(server.sockets[0].getsockname()[1] if server.sockets else config.port)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        server.close()
        await runner.cleanup()


async def listen_public(runner: web.AppRunner, app: web.Application, host: str, port: int,
                        backlog: int = 128, sock: socket.socket | None = None) -> asyncio.Server:
    """Listen for ``app`` (set up in ``runner``) behind its public edge's socket guard (the
    socket cap and handshake deadline, :mod:`edge.sockets`). Close it before ``runner.cleanup()``."""
    edge = app[EDGE_KEY]
    return await listen(runner, edge.sockets, host, port, backlog, on_accept_error=edge.metrics.accept_errors.inc,
                        sock=sock)
