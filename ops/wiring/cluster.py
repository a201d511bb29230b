"""Cluster membership and routing, as state nodes and edges both wire it: the shard
ownership view, the ZooKeeper coordinator that keeps it, and the network client that routes
to the owners by it (lanes from ``XPLATFORM_TRANSPORT_LANES``); and the lane metrics of that
client (and of a state node's server) as a scrape sees them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import generate_latest

from infrastructure.cluster.layout import Layout
from infrastructure.cluster.ownership import Ownership
from infrastructure.cluster.zookeeper import MemberInfo, ZooKeeperAuth, ZooKeeperCoordinator
from infrastructure.settings import Settings
from infrastructure.transport import tls
from infrastructure.transport.auth import LinkAuth
from infrastructure.transport.client import ClusterClient
from infrastructure.transport.server import NodeServer


def lanes_from(settings: Settings) -> dict[str, str]:
    """``XPLATFORM_TRANSPORT_LANES`` (``Category=lane,...``) as a mapping."""
    pairs = [p.split("=", 1) for p in settings.transport_lanes.split(",") if p.strip()]
    return {category.strip(): lane.strip() for category, lane in pairs}


@dataclass
class Membership:
    """A process's place in the cluster: who owns what, and the links to the owners."""

    ownership: Ownership
    coordinator: ZooKeeperCoordinator
    client: ClusterClient


def join(settings: Settings, member: MemberInfo, categories: Collection[str], auth: LinkAuth) -> Membership:
    """The ownership view, coordinator and network client of a member (``member.role``:
    ``state`` or ``edge``) for ``categories``; nothing is started (``coordinator.start()``)."""
    layout = Layout.parse(settings.cluster_layout) if settings.cluster_layout else Layout.everything()
    ownership = Ownership(settings.node_id, settings.shards_per_category,
                          previous_owner_window_s=settings.transport_previous_owner_window_s)
    coordinator = ZooKeeperCoordinator(
        settings.zookeeper_hosts, settings.cluster_name, member, {c: settings.shards_per_category for c in categories},
        layout, ownership, session_timeout_s=settings.zk_session_timeout_s, auth=ZooKeeperAuth.from_settings(settings))
    lanes = lanes_from(settings)
    client = ClusterClient(settings.node_id, member.role, route=coordinator.route, address_of=coordinator.address_of,
                           auth=auth, lane_of=lambda ref: lanes.get(ref.category, "default"),
                           ask_timeout_s=settings.ask_timeout_s, metrics=ownership.metrics,
                           handshake_timeout_s=settings.transport_handshake_timeout_s, ssl=tls.client_context(settings))
    return Membership(ownership, coordinator, client)


def record_lanes(membership: Membership, server: NodeServer | None = None) -> None:
    """Lane buffers (bytes) and queues (envelopes) as of now, into the cluster registry."""
    metrics = membership.ownership.metrics
    for lane, buffered in membership.client.buffered_by_lane().items():
        metrics.lane_buffer.labels(lane).set(buffered)
    metrics.record_lanes("client", membership.client.queued_by_lane())
    if server is not None:
        metrics.record_lanes("server", server.queued_by_lane())


def cluster_exposition(membership: Membership, server: NodeServer | None = None) -> bytes:
    """The cluster registry (ZooKeeper state, routing misses, lanes), lanes recorded first."""
    record_lanes(membership, server)
    return generate_latest(membership.ownership.metrics.registry)
