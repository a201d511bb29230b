"""Dev mode (``xplatform run``): the whole platform in one process - a state node owning
every shard, the in-process transport, the event store from settings (SQLite by default) -
and its edges on one aiohttp application.

Defaults are the embedded dev mode; every part can be overridden (a journal, the entity
classes, the ownership), as in eventsourcing's ``Application.construct_*`` and
cosmicpython's ``bootstrap``. There are no module-level singletons: build as many platforms
as a test needs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from domain.entity import Entity
from edge.app import STATIC_DIR, build_edge_app, serve_app
from edge.config import EdgeConfig, is_loopback
from edge.internal_listener import INTERNAL_LISTENER_KEY
from edge.metrics import EdgeMetrics
from edge.sockets import raise_open_file_limit
from infrastructure import event_loop
from infrastructure.metrics import NodeMetrics
from infrastructure.persistence import EventJournal
from infrastructure.read_port import ReadPort
from infrastructure.runtime import StateNode
from infrastructure.runtime.sharding import ShardOwnership
from infrastructure.settings import Settings
from infrastructure.transport import LocalTransport
from ops.wiring.metrics import add_metrics
from ops.wiring.node import build_node, start_node, stop_node
from ops.wiring.proxies import build_remote_calls, start_sample_warehouse

if TYPE_CHECKING:  # imported by run() only: other commands need no database driver
    from ops.wiring.readmodels import DevReadModels


@dataclass
class Platform:
    """A wired, one-process platform. ``async with`` starts and stops it."""

    settings: Settings
    journal: EventJournal
    node: StateNode
    transport: LocalTransport

    async def start(self) -> None:
        await start_node(self.node)

    async def stop(self) -> None:
        await stop_node(self.node)

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def build_platform(
    settings: Settings | None = None,
    entities: Iterable[type[Entity]] | None = None,
    journal: EventJournal | None = None,
    ownership: ShardOwnership | None = None,
    metrics: NodeMetrics | None = None,
) -> Platform:
    """Wire a platform from ``settings`` (default: from ``XPLATFORM_*`` environment).
    ``entities``: the classes to serve (default: the ``XPLATFORM_ENTITIES`` setting's,
    resolved before anything opens). The in-process transport is the node's router and
    outbound sink; state proxies reach their primaries through ``XPLATFORM_PROXY_PRIMARIES``."""
    settings = settings or Settings.from_env()
    node = build_node(settings, entities, journal, ownership, metrics)
    transport = LocalTransport(node, settings.ask_timeout_s)
    node.connect(router=transport, outbound=transport, remote=build_remote_calls(settings, node.metrics.registry))
    return Platform(settings, node.journal, node, transport)


def dev_app(platform: Platform, config: EdgeConfig | None = None, static_dir: Path | None = STATIC_DIR,
            read_models: DevReadModels | None = None, reads: ReadPort | None = None) -> web.Application:
    """The edge application of ``platform`` (public edge, internal edge when configured, dev
    tokens when on, the demo page from ``static_dir``, the query API of ``read_models``, or of
    the read port ``reads``, when given) with ``/metrics`` (edge and node registries: on the
    app's port while it listens on loopback, else on the internal listener). The platform
    starts before the edge and stops after it; the read models stop before it (they are
    started by :func:`serve_dev` once the edge listens: serving first, read models after)."""
    config = config or EdgeConfig.from_settings(platform.settings)
    metrics = EdgeMetrics()
    if read_models is not None:
        reads = read_models.port
    app = build_edge_app(platform.transport, platform.node.types.categories, config, metrics=metrics,
                         static_dir=static_dir, reads=reads)

    async def platform_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await platform.start()
        yield
        if read_models is not None:
            await asyncio.to_thread(read_models.stop)
        await platform.stop()

    app.cleanup_ctx.insert(0, platform_lifecycle)  # first: started before the edge, stopped after it

    def render() -> bytes:
        exposition = metrics.exposition() + platform.node.metrics.exposition()
        return exposition if read_models is None else exposition + read_models.exposition()

    add_metrics(app, render, config.metrics_host, config.metrics_port, on_app_port=is_loopback(config.host))
    return app


async def serve_dev(platform: Platform, config: EdgeConfig, ready: asyncio.Event | None = None,
                    read_models: DevReadModels | None = None) -> None:
    """Run the dev server until SIGINT/SIGTERM (Ctrl-C); print the URL when it listens."""
    raise_open_file_limit()

    app = dev_app(platform, config, read_models=read_models)
    devices = app.get(INTERNAL_LISTENER_KEY)  # the device edge's own listener (XPLATFORM_EDGE_INTERNAL_PORT >= 0)

    def announce(port: int) -> None:
        metrics_at = "metrics at /metrics" if is_loopback(config.host) else "metrics on the internal listener"
        print(f"X Platform serving on http://{config.host}:{port}/  (demo page; websocket at /ws/<category>/<id>; "
              f"{metrics_at}{'; dev tokens at /dev/token' if config.dev_tokens else ''}"
              f"{f'; devices at {devices.url}' if devices else ''}) - Ctrl-C stops", flush=True)
        if read_models is not None:
            read_models.start()  # in the background: the database and the projectors come up after this line
        if ready is not None:
            ready.set()

    await serve_app(app, config, announce)


def run(settings: Settings, host: str | None = None, port: int | None = None, dev_tokens_on_network: bool = False,
        workers: int | None = None) -> None:
    """``xplatform run``: dev mode is the one-process platform plus its edge; dev tokens are
    on unless XPLATFORM_EDGE_DEV_TOKENS says otherwise (the demo page needs them). With dev
    tokens a non-loopback host is refused (EdgeConfigurationError) unless
    ``dev_tokens_on_network``. ``workers`` (default: the ``edge_workers`` setting) edge
    worker processes beside the state node instead of one process: :mod:`ops.wiring.workers`.
    The sample warehouse runs beside it when it serves ``StockLevel`` with no primary named
    (:func:`~ops.wiring.proxies.start_sample_warehouse`), stopped when it stops."""
    config = dev_edge_config(settings, host, port, dev_tokens_on_network)
    settings, warehouse = start_sample_warehouse(settings)
    if warehouse is not None:
        print(f"sample warehouse (the StockLevel proxies' primary) at {warehouse.url}", flush=True)
    try:
        _run(settings, config, settings.edge_workers if workers is None else workers)
    finally:
        if warehouse is not None:
            warehouse.stop()


def _run(settings: Settings, config: EdgeConfig, workers: int) -> None:
    where = settings.sqlite_path if settings.store == "sqlite" else settings.store
    if workers:
        from ops.wiring.workers import serve_with_workers

        print(f"X Platform, a state node and {workers} edge worker process(es): store={settings.store} ({where}), "
              f"node={settings.node_id}, loop={event_loop.loop_name(settings)}", flush=True)
        event_loop.run(serve_with_workers(settings, config, workers), settings)
        return
    platform = build_platform(settings)
    read_models = None
    if settings.run_read_models:
        from ops.wiring.readmodels import DevReadModels

        read_models = DevReadModels(settings, platform.journal)
    print(f"X Platform, one process: store={settings.store} ({where}), node={settings.node_id}, "
          f"loop={event_loop.loop_name(settings)}", flush=True)
    event_loop.run(serve_dev(platform, config, read_models=read_models), settings)


def dev_edge_config(settings: Settings, host: str | None, port: int | None, dev_tokens_on_network: bool) -> EdgeConfig:
    """The edge configuration of ``xplatform run``: the settings', with dev tokens on unless
    XPLATFORM_EDGE_DEV_TOKENS is set, and the command line's host and port."""
    overrides: dict[str, Any] = {}
    if "XPLATFORM_EDGE_DEV_TOKENS" not in os.environ:
        overrides["dev_tokens"] = True
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if dev_tokens_on_network:
        overrides["dev_tokens_on_network"] = True
    return EdgeConfig.from_settings(settings, **overrides)
