"""The edge application: everything a process serves to clients on one aiohttp app, built
on whatever transport it is handed (the port, :mod:`infrastructure.transport.port`), and the
server loop that runs such an app. Which transport, platform and ``/metrics`` go with it is
the composition floor's choice (``ops/wiring``): this module never sees a state node.

One application serves: the public edge (``/ws/...``), the query API of read models
(``/read/...``, when the floor hands it a read port), the internal edge (``/internal/...``,
only when device networks are configured, and only while ``edge_internal_port`` is -1: else
on a listener of its own, :mod:`edge.internal_listener`, which also runs the configured
serial lines, :mod:`edge.serial_line`), the dev token issuer (``/dev/token``, only when
``edge_dev_tokens`` is on) and the demo page (``/`` → ``edge/static/demo.html``,
``/static/`` → ``edge/static/``).

The dev token issuer: ``GET /dev/token?sub=<name>&role=<role>`` → ``{"token", "expires_in"}``,
an ES256 token signed with a key pair made at start (its public key is trusted by this
edge only; ``iss``/``aud`` are the configured ones, else ``xplatform-dev``). Off unless
``XPLATFORM_EDGE_DEV_TOKENS=1``; ``xplatform run`` turns it on because it is the dev mode,
and refuses to start with it on a non-loopback address unless told so explicitly
(``edge/config.py``). It answers only requests whose ``Host`` is a loopback name (403
``host_not_allowed`` otherwise): a DNS-rebinding page reaches a loopback server under its
own name, and must not get a token. Tokens are never logged (``edge/accesslog.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from collections.abc import Callable, Collection
from pathlib import Path

from aiohttp import web
from yarl import URL

from edge.accesslog import RedactingAccessLogger
from edge.auth import DevTokenIssuer
from edge.config import EdgeConfig, is_ip_literal, is_loopback
from edge.internal import InternalEdge
from edge.internal_listener import mount_internal_edge
from edge.metrics import EdgeMetrics
from edge.public import EDGE_KEY, PublicEdge, add_public_edge, build_verifier
from edge.reads import ReadApi, add_read_api
from edge.sockets import listen
from infrastructure.read_port import ReadPort
from infrastructure.transport.port import Transport

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

DEV_ISSUER_KEY = web.AppKey("xplatform_dev_issuer", DevTokenIssuer)
CONFIG_KEY = web.AppKey("xplatform_edge_config", EdgeConfig)


def build_edge_app(transport: Transport, categories: Collection[str], config: EdgeConfig, *,
                   metrics: EdgeMetrics | None = None, static_dir: Path | None = STATIC_DIR,
                   dev_issuer: DevTokenIssuer | None = None, reads: ReadPort | None = None) -> web.Application:
    """The edge application on ``transport`` for entities of ``categories`` (see the module
    docstring). ``static_dir``: the demo page's files (None: none served). ``dev_issuer``:
    the dev token issuer when ``config.dev_tokens`` (one shared key, e.g. by the edge workers
    of one ``xplatform run --workers``); default: a key made here. ``reads``: the read models'
    port, served as the query API (``/read/...``, :mod:`edge.reads`); None: no query API."""
    metrics = metrics or EdgeMetrics()
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
    if reads is not None:
        add_read_api(app, ReadApi(reads, verifier, config, metrics))
    if config.internal_networks or config.serial_ports:
        mount_internal_edge(app, InternalEdge(transport, config, registry=public.registry, metrics=metrics,
                                              categories=categories, load=public.load), public.sockets)
    if static_dir is not None:
        _add_static(app, static_dir)
    return app


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


async def serve_app(app: web.Application, config: EdgeConfig, announce: Callable[[int], None],
                    sock: socket.socket | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` on the configured address (or on the listening socket ``sock``, e.g. one
    shared by edge workers) until SIGINT/SIGTERM or ``stop`` is set; ``announce(port)`` once
    listening (port 0 picks a free one). Shutdown runs the app's GOING_AWAY handlers."""
    runner = web.AppRunner(app, shutdown_timeout=config.close_timeout_s * 3, access_log_class=RedactingAccessLogger)
    try:
        await runner.setup()  # a start hook that fails (e.g. a serial port that cannot be opened) ...
        server = await listen_public(runner, app, config.host, config.port, sock=sock)
    except BaseException:
        await runner.cleanup()  # what started with the app (a platform, a coordinator) stops again
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
