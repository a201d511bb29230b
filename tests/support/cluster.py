"""Test fixtures use the local cluster of ops/local (one implementation for tests and benchmarks);
and what a crash of an in-process clustered state node looks like to the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kazoo.client import KazooClient

from ops.local.cluster import HS256_SECRET, Cluster, ClusterProcess, ClusterSecrets, cluster_token

if TYPE_CHECKING:
    from ops.wiring.state_node import ClusteredStateNode


async def crash(node: ClusteredStateNode, zookeeper_hosts: str) -> None:
    """kill -9 of an in-process state node, as the others see it: its transport goes silent and
    its ZooKeeper session expires without a goodbye (the node object itself is left for the test
    to stop at the end)."""
    await node.server.stop()
    session_id, password = node.coordinator.client.client_id
    killer = KazooClient(zookeeper_hosts, client_id=(session_id, password))
    killer.start(5)
    killer.stop()
    killer.close()
    await node.coordinator.stop()


__all__ = ["HS256_SECRET", "Cluster", "ClusterProcess", "ClusterSecrets", "cluster_token", "crash"]
