"""Composition of one clustered state node process: runtime + ZooKeeper ownership + the
network transport (``xplatform state-node``).

Start order matters: the transport server listens first (its address goes into the
ZooKeeper member record), then the node joins ZooKeeper and serves the shards the map
gives it. Stop order (a drain): refuse new messages, finish pending appends, then leave
ZooKeeper (withdraw the member entry, wait for a map without us, close the session: the
allocator moves our shards at once instead of after a session timeout), then close the
links. Flushing first means the next owner never races one of our appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from domain.entity import Entity
from domain.messages import EntityMessage
from domain.refs import EntityRef
from infrastructure.bootstrap import Platform, build_platform
from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperAuth, ZooKeeperCoordinator
from infrastructure.metrics_http import MetricsListener
from infrastructure.persistence import EventJournal
from infrastructure.runtime.entity_modules import entity_types_from
from infrastructure.runtime.node import StateNode
from infrastructure.settings import Settings
from infrastructure.transport import tls
from infrastructure.transport.auth import link_auth_from
from infrastructure.transport.client import ClusterClient
from infrastructure.transport.server import NodeServer

log = logging.getLogger(__name__)


def lanes_from(settings: Settings) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in settings.transport_lanes.split(",") if p.strip()]
    return {category.strip(): lane.strip() for category, lane in pairs}


class LocalFirstRouter:
    """Entity-to-entity messages: delivered in this process when we own the target, else
    sent to its owner over the transport."""

    def __init__(self, node: StateNode, ownership: Ownership, remote: ClusterClient) -> None:
        self.node, self.ownership, self.remote = node, ownership, remote

    def tell(self, to: EntityRef, message: EntityMessage) -> None:
        if self.ownership.is_mine(to):
            asyncio.get_running_loop().call_soon(self.node.deliver, to, message)
        else:
            self.remote.tell(to, message)


class ClusteredStateNode:
    """A state node in a cluster. ``async with`` runs it."""

    def __init__(self, settings: Settings, entities: Iterable[type[Entity]] | None = None,
                 journal: EventJournal | None = None) -> None:
        """``entities``: the classes to serve (default: the ``XPLATFORM_ENTITIES`` setting's);
        ``journal``: the event store (default: opened from ``settings``), as for
        :func:`build_platform`; tests pass a wrapper to hold appends in flight."""
        self.settings = settings
        types = entity_types_from(settings, entities)  # first: a wrong topic is named before anything else
        auth = link_auth_from(settings, "state")  # before anything starts: no secrets, no node
        zookeeper_auth = ZooKeeperAuth.from_settings(settings)
        self.ownership = Ownership(settings.node_id, settings.shards_per_category,
                                   previous_owner_window_s=settings.transport_previous_owner_window_s)
        self.platform: Platform = build_platform(settings, entities=types, journal=journal, ownership=self.ownership)
        layout = Layout.parse(settings.cluster_layout) if settings.cluster_layout else Layout.everything()
        categories = {c: settings.shards_per_category for c in self.platform.node.types.categories}
        self.server = NodeServer(self.platform.node, settings.node_id, is_member=lambda n: self.coordinator.is_member(n),
                                 auth=auth, may_speak_for=self.ownership.may_speak_for, host=settings.transport_host,
                                 port=settings.transport_port, metrics=self.ownership.metrics,
                                 handshake_timeout_s=settings.transport_handshake_timeout_s,
                                 ssl=tls.server_context(settings), max_handshakes=settings.transport_max_handshakes)
        self.coordinator = ZooKeeperCoordinator(
            settings.zookeeper_hosts, settings.cluster_name,
            MemberInfo(settings.node_id, role="state", group=settings.node_group), categories, layout,
            self.ownership, session_timeout_s=settings.zk_session_timeout_s, auth=zookeeper_auth)
        lanes = lanes_from(settings)
        self.client = ClusterClient(settings.node_id, "state", route=self.coordinator.route,
                                    address_of=self.coordinator.address_of, auth=auth,
                                    lane_of=lambda ref: lanes.get(ref.category, "default"),
                                    ask_timeout_s=settings.ask_timeout_s, metrics=self.ownership.metrics,
                                    handshake_timeout_s=settings.transport_handshake_timeout_s,
                                    ssl=tls.client_context(settings))
        self._metrics: MetricsListener | None = None
        self.platform.node.router = LocalFirstRouter(self.platform.node, self.ownership, self.client)
        if settings.supervisor_session_file:
            self.coordinator.on_session = self._tell_supervisor
        self._flushes: set[asyncio.Task[None]] = set()
        self.ownership.listeners.append(self._on_ownership)

    def _tell_supervisor(self, session_id: int, password: bytes) -> None:
        """Our supervisor ends this session if we die (infrastructure/cluster/supervisor.py)."""
        from infrastructure.cluster.supervisor import write_session

        try:
            write_session(self.settings.supervisor_session_file, session_id, password)
        except OSError:
            log.error("cannot tell the supervisor our ZooKeeper session; a crash is detected only when "
                      "the session expires", exc_info=True)

    def _on_ownership(self, _state: object, _assignment: object) -> None:
        """Shards handed away: drop their resident entities (they are another node's now; kept,
        they would answer stale if the shard came back) and time each handoff until our pending
        writes are durable (handoff metric)."""
        moved = self.ownership.take_moved_away()
        if moved:
            self.platform.node.release(lambda ref: self.ownership.shard_key(ref) in moved)
        released = self.ownership.take_releasing()
        if released:
            task = asyncio.get_running_loop().create_task(self._flushed(released))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flushed(self, released: list[float]) -> None:
        await self.platform.node.drain()
        now = time.monotonic()
        histogram = self.ownership.metrics.handoff_duration.labels("lost")
        for started in released:
            histogram.observe(now - started)

    def record_transport_metrics(self) -> None:
        """Lane buffers (bytes) and queues (envelopes) as of now; called per scrape."""
        metrics = self.ownership.metrics
        for lane, buffered in self.client.buffered_by_lane().items():
            metrics.lane_buffer.labels(lane).set(buffered)
        metrics.record_lanes("client", self.client.queued_by_lane())
        metrics.record_lanes("server", self.server.queued_by_lane())

    async def start(self) -> None:
        await self.platform.start()
        await self.server.start()
        self.coordinator.member = MemberInfo(self.settings.node_id, address=self.advertised_address, role="state",
                                             group=self.settings.node_group)
        await self.coordinator.start()
        log.info("state node %s serving on %s (published as %s)", self.settings.node_id, self.server.address,
                 self.advertised_address)

    @property
    def advertised_address(self) -> str:
        """The address members are told to connect to (transport_advertise, else where we listen)."""
        return self.settings.transport_advertise or self.server.address

    async def stop(self) -> None:
        """Drain: refuse new messages (callers resend to the next owner), flush pending
        appends, then leave ZooKeeper so the shards move at once, then close."""
        self.ownership.draining()
        await self.platform.node.drain()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.coordinator.stop()
        await self.client.close()
        await self.server.stop()
        if self._metrics is not None:
            await self._metrics.stop()
        await self.platform.stop()

    async def serve_metrics(self) -> str:
        """``/metrics`` (node + cluster registries) on the internal listener,
        ``metrics_host``:``metrics_port`` (never the transport's address)."""
        from prometheus_client import generate_latest

        def render() -> bytes:
            self.record_transport_metrics()
            return generate_latest(self.platform.node.metrics.registry) + generate_latest(self.ownership.metrics.registry)

        self._metrics = MetricsListener(render, self.settings.metrics_host, self.settings.metrics_port)
        return await self._metrics.start()

    async def __aenter__(self) -> ClusteredStateNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_state_node(settings: Settings) -> None:
    """``xplatform state-node``: run until SIGTERM/SIGINT, then leave the cluster gracefully
    (:meth:`ClusteredStateNode.stop`: flush pending appends, then leave ZooKeeper so the
    allocator moves our shards at once)."""
    import signal

    from infrastructure.errors import ConfigurationError

    if not settings.zookeeper_hosts:
        raise ConfigurationError("state-node needs XPLATFORM_ZOOKEEPER_HOSTS (dev mode without ZooKeeper: xplatform run)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ClusteredStateNode(settings) as node:
        metrics_url = await node.serve_metrics()
        print(f"state node {settings.node_id} ready on {node.server.address} (metrics: {metrics_url})", flush=True)
        await stop.wait()
