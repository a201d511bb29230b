"""A clustered state node process (``xplatform state-node``): runtime + ZooKeeper
ownership + the network transport.

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
import signal
import time
from collections.abc import Iterable

from domain.entity import Entity
from infrastructure.cluster.requests import RequestWatch
from infrastructure.cluster.routing import LocalFirstRouter
from infrastructure.cluster.standby import Standby
from infrastructure.cluster.supervisor import write_session
from infrastructure.cluster.zookeeper import MemberInfo
from infrastructure.errors import ConfigurationError
from infrastructure.persistence import EventJournal, open_event_stream
from infrastructure.runtime.entity_modules import entity_types_from
from infrastructure.runtime.mirror_groups import group_name
from infrastructure.runtime.mirrors import FEED_POLL_S
from infrastructure.runtime.node import StateNode
from infrastructure.settings import Settings
from infrastructure.transport import tls
from infrastructure.transport.auth import link_auth_from
from infrastructure.transport.server import NodeServer
from ops.wiring.cluster import answer_request, cluster_exposition, join, record_lanes
from ops.wiring.metrics import MetricsListener
from ops.wiring.node import build_node, start_node, stop_node
from ops.wiring.proxies import build_remote_calls

log = logging.getLogger(__name__)


class ClusteredStateNode:
    """A state node in a cluster. ``async with`` runs it."""

    def __init__(self, settings: Settings, entities: Iterable[type[Entity]] | None = None,
                 journal: EventJournal | None = None) -> None:
        """``entities``: the classes to serve (default: the ``XPLATFORM_ENTITIES`` setting's);
        ``journal``: the event store (default: opened from ``settings``); tests pass a
        wrapper to hold appends in flight."""
        self.settings = settings
        types = entity_types_from(settings, entities)  # first: a wrong topic is named before anything else
        auth = link_auth_from(settings, "state")  # before anything starts: no secrets, no node
        member = MemberInfo(settings.node_id, role="state", group=settings.node_group)
        self.membership = join(settings, member, types.categories, auth)
        self.ownership, self.coordinator, self.client = (self.membership.ownership, self.membership.coordinator,
                                                         self.membership.client)
        self.node: StateNode = build_node(settings, entities=types, journal=journal, ownership=self.ownership)
        self.server = NodeServer(self.node, settings.node_id, is_member=self.coordinator.is_member,
                                 auth=auth, may_speak_for=self.ownership.may_speak_for, host=settings.transport_host,
                                 port=settings.transport_port, metrics=self.ownership.metrics,
                                 handshake_timeout_s=settings.transport_handshake_timeout_s,
                                 ssl=tls.server_context(settings), max_handshakes=settings.transport_max_handshakes)
        self.node.connect(router=LocalFirstRouter(self.node, self.ownership, self.client), outbound=self.server,
                          remote=build_remote_calls(settings, self.node.metrics.registry))
        self.standby: Standby | None = None
        """Hot mirror of the shards this node stands by for: only when the layout gives some category mirrors."""
        if self.coordinator.layout.any_mirrors:
            mirrored = [c for c in types.categories if self.coordinator.layout.mirrors(c)]
            feed = open_event_stream(settings, self.node.journal, own_pool=f"xplatform {settings.node_id} mirror feed",
                                     poll_interval_s=FEED_POLL_S)
            group = (group_name(settings.eventstoredb_stream_prefix, settings.node_id, tuple(mirrored))
                     if settings.store == "eventstoredb" else None)  # the card: persistent subscriptions feed mirrors
            self.standby = Standby(self.node, self.ownership, feed, mirrored,
                                   budget_bytes=settings.mirror_budget_bytes, group=group)
            self.standby.feed.on_lag = lambda lag: self.coordinator.update_member(mirror_lag=lag)
        self._metrics: MetricsListener | None = None
        if settings.supervisor_session_file:
            self.coordinator.on_session = self._tell_supervisor
        self._flushes: set[asyncio.Task[None]] = set()
        self.ownership.listeners.append(self._on_ownership)
        self.leave = asyncio.Event()
        """Set when an operator asked this node to drain (``xplatform drain``): whoever runs
        the node stops it (``serve_state_node`` does, like on SIGTERM)."""
        self.requests = RequestWatch(self.coordinator.client, self.coordinator.root, settings.node_id,
                                     self.coordinator.auth, lambda action: answer_request(action, self.leave),
                                     drills_enabled=bool(settings.drills_enabled))

    @property
    def journal(self) -> EventJournal:
        return self.node.journal

    def _tell_supervisor(self, session_id: int, password: bytes) -> None:
        """Our supervisor ends this session if we die (infrastructure/cluster/supervisor.py)."""
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
            self.node.release(lambda ref: self.ownership.shard_key(ref) in moved)
        released = self.ownership.take_releasing()
        if released:
            task = asyncio.get_running_loop().create_task(self._flushed(released))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flushed(self, released: list[float]) -> None:
        await self.node.drain()
        now = time.monotonic()
        histogram = self.ownership.metrics.handoff_duration.labels("lost")
        for started in released:
            histogram.observe(now - started)

    def record_transport_metrics(self) -> None:
        """Lane buffers (bytes) and queues (envelopes) as of now; called per scrape."""
        record_lanes(self.membership, self.server)

    async def start(self) -> None:
        await start_node(self.node)
        await self.server.start()
        self.coordinator.member = MemberInfo(self.settings.node_id, address=self.advertised_address, role="state",
                                             group=self.settings.node_group)
        await self.coordinator.start()
        await self.requests.start()
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
        await self.node.drain()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.coordinator.stop()
        if self.standby is not None:
            await asyncio.to_thread(self.standby.stop)
        await self.client.close()
        await self.server.stop()
        if self._metrics is not None:
            await self._metrics.stop()
        await stop_node(self.node)

    async def serve_metrics(self) -> str:
        """``/metrics`` (node + cluster registries) on the internal listener,
        ``metrics_host``:``metrics_port`` (never the transport's address)."""
        def render() -> bytes:
            return self.node.metrics.exposition() + cluster_exposition(self.membership, self.server)

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
    if not settings.zookeeper_hosts:
        raise ConfigurationError("state-node needs XPLATFORM_ZOOKEEPER_HOSTS (dev mode without ZooKeeper: xplatform run)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ClusteredStateNode(settings) as node:
        metrics_url = await node.serve_metrics()
        print(f"state node {settings.node_id} ready on {node.server.address} (metrics: {metrics_url})", flush=True)
        await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.leave.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
