"""A public edge in a cluster (``xplatform edge``): the same edge as in dev mode, but its
transport is the network client, routed by the shard map from ZooKeeper.

The edge registers in ZooKeeper as a member with role ``edge`` (state nodes accept links
only from members that prove they hold the edge secret: infrastructure/transport/auth.py), watches the shard
map, and tells each owning node which entities it holds connections for (the registry's first/last-connection hooks), again whenever the
map moves an entity. Shutdown closes every socket with 1001 GOING_AWAY: clients reconnect,
with the same connection ID, to another edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from aiohttp import web

from edge.app import add_metrics_listener
from edge.config import EdgeConfig
from edge.metrics import EdgeMetrics
from edge.public import PublicEdge, add_public_edge, build_verifier
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.state_node import lanes_from
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperAuth, ZooKeeperCoordinator
from infrastructure.gc_pauses import GcPauses
from infrastructure.metrics_http import MetricsListener
from infrastructure.settings import Settings
from infrastructure.transport import tls
from infrastructure.transport.auth import link_auth_from
from infrastructure.transport.client import ClusterClient


class ClusteredEdge:
    """Coordinator + network transport + public edge. See the module docstring."""

    def __init__(self, settings: Settings, categories: Collection[str]) -> None:
        self.settings = settings
        # No /dev/token here, so dev mode's iss/aud defaults do not apply: both must be configured.
        self.config = EdgeConfig.from_settings(settings, dev_tokens=False)
        auth = link_auth_from(settings, "edge")  # the edge secret only: an edge cannot act as a state node
        layout = Layout.parse(settings.cluster_layout) if settings.cluster_layout else Layout.everything()
        self.ownership = Ownership(settings.node_id, settings.shards_per_category)
        self.coordinator = ZooKeeperCoordinator(
            settings.zookeeper_hosts, settings.cluster_name, MemberInfo(settings.node_id, role="edge"),
            {c: settings.shards_per_category for c in categories}, layout, self.ownership,
            session_timeout_s=settings.zk_session_timeout_s, auth=ZooKeeperAuth.from_settings(settings))
        lanes = lanes_from(settings)
        self.client = ClusterClient(settings.node_id, "edge", route=self.coordinator.route,
                                    address_of=self.coordinator.address_of, auth=auth,
                                    lane_of=lambda ref: lanes.get(ref.category, "default"),
                                    ask_timeout_s=settings.ask_timeout_s, metrics=self.ownership.metrics,
                                    handshake_timeout_s=settings.transport_handshake_timeout_s,
                                    ssl=tls.client_context(settings))
        self.metrics = EdgeMetrics()
        GcPauses.install().register(self.metrics.registry)  # an edge process has no node registry
        self.public = PublicEdge(self.client, self.config, categories=categories,
                                 verifier=build_verifier(self.config), metrics=self.metrics)
        self.public.registry.watch(self.client.hold, self.client.release)
        self.ownership.listeners.append(lambda _state, _map: self.client.reannounce())
        self.metrics_listener = MetricsListener(self._render_metrics, self.config.metrics_host, self.config.metrics_port)

    def _render_metrics(self) -> bytes:
        from prometheus_client import generate_latest

        cluster = self.ownership.metrics  # ZooKeeper state, routing misses, lane buffers and queues to nodes
        for lane, buffered in self.client.buffered_by_lane().items():
            cluster.lane_buffer.labels(lane).set(buffered)
        cluster.record_lanes("client", self.client.queued_by_lane())
        return self.metrics.exposition() + generate_latest(cluster.registry)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=max(self.config.max_frame_bytes, 1024))

        async def coordination(app: web.Application) -> AsyncIterator[None]:
            await self.coordinator.start()
            yield
            await self.client.close()
            await self.coordinator.stop()

        app.cleanup_ctx.append(coordination)  # before the edge: routes exist when sockets arrive
        add_public_edge(app, self.public)
        add_metrics_listener(app, self.metrics_listener)  # never on the public port
        return app


async def serve_cluster_edge(settings: Settings, categories: Collection[str]) -> None:
    """``xplatform edge``: serve until SIGTERM/SIGINT (then GOING_AWAY to every client)."""
    from edge.app import serve_app
    from infrastructure.errors import ConfigurationError

    if not settings.zookeeper_hosts:
        raise ConfigurationError("edge needs XPLATFORM_ZOOKEEPER_HOSTS (dev mode without ZooKeeper: xplatform run)")
    from infrastructure.gc_tuning import GcTuning

    # the edge process allocates per frame as much as a node per message, and holds every socket
    GcTuning.acquire(settings.gc_gen0_threshold, settings.gc_reclaim_every_s, settings.gc_reclaim_growth)
    from edge.sockets import raise_open_file_limit

    raise_open_file_limit()  # before the socket cap is derived from it
    edge = ClusteredEdge(settings, categories)
    await serve_app(edge.app(), edge.config,  # the URL last: tools take what follows "ready on"
                    lambda port: print(f"edge {settings.node_id} (metrics: {edge.metrics_listener.url}) "
                                       f"ready on http://{edge.config.host}:{port}/", flush=True))
