"""A clustered edge process (``xplatform edge``): the same public edge as in dev mode, and
the internal device edge when device networks are configured
(``XPLATFORM_EDGE_INTERNAL_NETWORKS``; it then needs ``XPLATFORM_EDGE_DEVICE_SECRET_FILE``,
the same file on every edge, so a device keeps its connection ID on any edge) - on the
public port, or with ``XPLATFORM_EDGE_INTERNAL_PORT`` >= 0 on a listener of its own
(edge/internal_listener.py; its URL is printed as ``(devices: <url>)`` in the ready line) -
on the network transport routed by the shard map from ZooKeeper. With ``XPLATFORM_MONGO_URI``
it also serves the query API (``/read/...``, edge/reads.py) over the read models
``xplatform projector`` processes write (:class:`~ops.wiring.readmodels.EdgeReads`).

The edge registers in ZooKeeper as a member with role ``edge`` (state nodes accept links
only from members that prove they hold the edge secret: infrastructure/transport/auth.py),
watches the shard map, and tells each owning node which entities it holds connections for
(the registry's first/last-connection hooks), again whenever the map moves an entity.
Shutdown closes every socket with 1001 GOING_AWAY: clients reconnect, with the same
connection ID, to another edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING

from aiohttp import web

from edge.app import serve_app
from edge.config import EdgeConfig
from edge.internal import InternalEdge
from edge.internal_listener import InternalListener, mount_internal_edge
from edge.metrics import EdgeMetrics
from edge.public import PublicEdge, add_public_edge, build_verifier
from edge.reads import ReadApi, add_read_api
from edge.sockets import raise_open_file_limit
from infrastructure.cluster.requests import RequestWatch
from infrastructure.cluster.zookeeper import MemberInfo
from infrastructure.errors import ConfigurationError
from infrastructure.gc_pauses import GcPauses
from infrastructure.gc_tuning import GcTuning
from infrastructure.settings import Settings
from infrastructure.transport.auth import link_auth_from
from ops.wiring.cluster import answer_request, cluster_exposition, join
from ops.wiring.metrics import MetricsListener, add_metrics

if TYPE_CHECKING:  # pymongo is imported only by an edge that serves reads
    from ops.wiring.readmodels import EdgeReads


class ClusteredEdge:
    """Coordinator + network transport + public edge. See the module docstring."""

    def __init__(self, settings: Settings, categories: Collection[str]) -> None:
        self.settings = settings
        self.categories = categories
        # No /dev/token here, so dev mode's iss/aud defaults do not apply: both must be configured.
        self.config = EdgeConfig.from_settings(settings, dev_tokens=False)
        auth = link_auth_from(settings, "edge")  # the edge secret only: an edge cannot act as a state node
        self.membership = join(settings, MemberInfo(settings.node_id, role="edge"), categories, auth)
        self.ownership, self.coordinator, self.client = (self.membership.ownership, self.membership.coordinator,
                                                         self.membership.client)
        self.metrics = EdgeMetrics()
        GcPauses.install().register(self.metrics.registry)  # an edge process has no node registry
        self.public = PublicEdge(self.client, self.config, categories=categories,
                                 verifier=build_verifier(self.config), metrics=self.metrics)
        self.public.registry.watch(self.client.hold, self.client.release)
        self.ownership.listeners.append(lambda _state, _map: self.client.reannounce())
        self.metrics_listener: MetricsListener | None = None
        self.internal_listener: InternalListener | None = None
        """The device edge's own listener (``XPLATFORM_EDGE_INTERNAL_PORT`` >= 0), else None."""
        self.leave = asyncio.Event()
        """Set on SIGTERM/SIGINT or when an operator asked this edge to drain
        (``xplatform drain``): the server stops, saying GOING_AWAY to every client."""
        self.reads: EdgeReads | None = None
        """The query API (/read/...) when XPLATFORM_MONGO_URI names the read models' database."""
        if settings.mongo_uri:
            from ops.wiring.readmodels import EdgeReads

            self.reads = EdgeReads(settings, settings.mongo_uri)
        self.requests = RequestWatch(self.coordinator.client, self.coordinator.root, settings.node_id,
                                     self.coordinator.auth, lambda action: answer_request(action, self.leave),
                                     drills_enabled=bool(settings.drills_enabled))


    def _render_metrics(self) -> bytes:
        # edge registry, then ZooKeeper state, routing misses, lane buffers and queues to nodes
        return self.metrics.exposition() + cluster_exposition(self.membership)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=max(self.config.max_frame_bytes, 1024))

        async def coordination(app: web.Application) -> AsyncIterator[None]:
            await self.coordinator.start()
            await self.requests.start()
            if self.reads is not None:
                self.reads.start()
            yield
            if self.reads is not None:
                await asyncio.to_thread(self.reads.stop)
            await self.client.close()
            await self.coordinator.stop()

        app.cleanup_ctx.append(coordination)  # before the edge: routes exist when sockets arrive
        add_public_edge(app, self.public)
        if self.reads is not None:  # JWT-authenticated like the websocket; each projection decides who reads what
            add_read_api(app, ReadApi(self.reads.port, self.public.verifier, self.config, self.metrics))
        if self.config.internal_networks or self.config.serial_ports:  # devices: same routing (edge/internal.py)
            self.internal_listener = mount_internal_edge(
                app, InternalEdge(self.client, self.config, registry=self.public.registry, metrics=self.metrics,
                                  categories=self.categories, load=self.public.load), self.public.sockets)
        # never on the public port
        self.metrics_listener = add_metrics(app, self._render_metrics, self.config.metrics_host, self.config.metrics_port)
        return app


async def serve_cluster_edge(settings: Settings, categories: Collection[str]) -> None:
    """``xplatform edge``: serve until SIGTERM/SIGINT (then GOING_AWAY to every client)."""
    if not settings.zookeeper_hosts:
        raise ConfigurationError("edge needs XPLATFORM_ZOOKEEPER_HOSTS (dev mode without ZooKeeper: xplatform run)")
    # the edge process allocates per frame as much as a node per message, and holds every socket
    GcTuning.acquire(settings.gc_gen0_threshold, settings.gc_reclaim_every_s, settings.gc_reclaim_growth)
    raise_open_file_limit()  # before the socket cap is derived from it
    edge = ClusteredEdge(settings, categories)
    app = edge.app()
    listener = edge.metrics_listener

    devices = edge.internal_listener

    def announce(port: int) -> None:  # the URL last: tools take what follows "ready on"
        print(f"edge {settings.node_id} (metrics: {listener.url if listener else ''})"
              f"{f' (devices: {devices.url})' if devices else ''} ready on http://{edge.config.host}:{port}/",
              flush=True)

    await serve_app(app, edge.config, announce, stop=edge.leave)
